"""DIAN rules shared by several services: NIT check digits and the CUFE."""
