# One environment: the estate with the values of this directory's
# terraform.tfvars. envs/*/main.tf and variables.tf are this one file (links):
# environments differ only in their values.

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
    tags = { Project = "bmc-registry", Environment = var.environment }
  }
}

module "estate" {
  source                  = "../../modules/estate"
  name                    = "bmc-${var.environment}"
  region                  = var.region
  cidr                    = var.cidr
  azs                     = var.azs
  database_instance_class = var.database_instance_class
  database_storage_gb     = var.database_storage_gb
  database_max_storage_gb = var.database_max_storage_gb
  redis_node_type         = var.redis_node_type
  app_image               = var.app_image
  envoy_image             = var.envoy_image
  collector_image         = var.collector_image
  edge_certificate_arn    = var.edge_certificate_arn
  edge_internal_domain    = var.edge_internal_domain
  domain_name             = var.domain_name
  domain_certificate_arn  = var.domain_certificate_arn
  clients                 = var.clients
  operator_cidrs          = var.operator_cidrs
  alarm_emails            = var.alarm_emails
}
