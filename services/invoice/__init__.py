"""The invoice service (`bmc.invoice.v1.InvoiceService`)."""
