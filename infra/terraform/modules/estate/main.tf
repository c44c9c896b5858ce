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

module "edge" {
  source                   = "../edge"
  name                     = var.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.app_subnet_ids
  kms_key_arn              = module.data.kms_key_arn
  listener_certificate_arn = var.edge_certificate_arn
  internal_domain          = var.edge_internal_domain
  domain_name              = var.domain_name
  domain_certificate_arn   = var.domain_certificate_arn
  clients                  = var.clients
}

module "observability" {
  source       = "../observability"
  name         = var.name
  kms_key_arn  = module.data.kms_key_arn
  alarm_emails = var.alarm_emails
  api_id       = module.edge.api_id
  database_id  = module.data.database_id
  redis_id     = module.data.redis_id
}

# The images: immutable tags (a digest names one build forever), scanned on push.
resource "aws_ecr_repository" "image" {
  for_each             = toset(["services", "envoy", "identity", "otel-collector"]) # otel-collector: the ADOT image, mirrored
  name                 = "${var.name}/${each.key}"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.data.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "image" {
  for_each   = aws_ecr_repository.image
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the last 50 images (rollbacks reach far enough back)"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 50 }
      action       = { type = "expire" }
    }]
  })
}

# The mesh's certificate authority: every task's identity container gets its
# workload certificates (SPIFFE IDs, 7 days at most) from it.
data "aws_partition" "current" {}

resource "aws_acmpca_certificate_authority" "mesh" {
  type                            = "ROOT"
  usage_mode                      = "SHORT_LIVED_CERTIFICATE"
  permanent_deletion_time_in_days = 7
  certificate_authority_configuration {
    key_algorithm     = "EC_prime256v1"
    signing_algorithm = "SHA256WITHECDSA"
    subject {
      organization = "BMC Registry"
      common_name  = "${var.name} mesh CA"
    }
  }
}

resource "aws_acmpca_certificate" "mesh" {
  certificate_authority_arn   = aws_acmpca_certificate_authority.mesh.arn
  certificate_signing_request = aws_acmpca_certificate_authority.mesh.certificate_signing_request
  signing_algorithm           = "SHA256WITHECDSA"
  template_arn                = "arn:${data.aws_partition.current.partition}:acm-pca:::template/RootCACertificate/V1"
  validity {
    type  = "YEARS"
    value = 10
  }
}

resource "aws_acmpca_certificate_authority_certificate" "mesh" {
  certificate_authority_arn = aws_acmpca_certificate_authority.mesh.arn
  certificate               = aws_acmpca_certificate.mesh.certificate
  certificate_chain         = aws_acmpca_certificate.mesh.certificate_chain
}
