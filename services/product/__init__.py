"""The product service (`bmc.product.v1.ProductService`)."""
