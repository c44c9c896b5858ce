"""The commission service (`bmc.commission.v1.CommissionService`)."""
