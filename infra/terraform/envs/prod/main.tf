# The prod environment: the estate with prod's values (terraform.tfvars).

terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
  # State in S3 with native locking; bootstrap the bucket first (see the README).
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { Project = "bmc-registry", Environment = "prod" }
  }
}

module "estate" {
  source                  = "../../modules/estate"
  name                    = "bmc-prod"
  region                  = var.region
  cidr                    = var.cidr
  azs                     = var.azs
  database_instance_class = var.database_instance_class
  database_storage_gb     = var.database_storage_gb
  database_max_storage_gb = var.database_max_storage_gb
  redis_node_type         = var.redis_node_type
  app_image               = var.app_image
  envoy_image             = var.envoy_image
  identity_image          = var.identity_image
  jwks_url                = var.jwks_url
  jwt_issuer              = var.jwt_issuer
}
