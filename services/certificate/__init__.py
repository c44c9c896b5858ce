"""The certificate service (`bmc.certificate.v1.CertificateService`)."""
