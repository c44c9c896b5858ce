# The whole estate of one environment; the roots under envs/ differ only in
# the values they pass.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

module "network" {
  source           = "../network"
  name             = var.name
  region           = var.region
  cidr             = var.cidr
  azs              = var.azs
  logs_kms_key_arn = module.data.kms_key_arn
}

module "data" {
  source                  = "../data"
  name                    = var.name
  region                  = var.region
  vpc_id                  = module.network.vpc_id
  subnet_ids              = module.network.data_subnet_ids
  database_instance_class = var.database_instance_class
  database_storage_gb     = var.database_storage_gb
  database_max_storage_gb = var.database_max_storage_gb
  redis_node_type         = var.redis_node_type
  # Only the services' tasks reach PostgreSQL and Redis.
  client_security_groups = { for name in local.with_database : name => module.service[name].security_group_id }
}
