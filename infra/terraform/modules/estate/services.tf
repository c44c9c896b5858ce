# The platform's tasks: one ECS service per microservice and the REST
# gateway, each with its Envoy sidecar configured by mesh/aws/<name>.json.

locals {
  mesh_dir = "${path.module}/../../../../mesh/aws"
  # vCPU units and MiB per task; see the README's capacity table.
  sizes = {
    invoice     = { cpu = 1024, memory = 2048 }
    product     = { cpu = 1024, memory = 2048 }
    ocr         = { cpu = 2048, memory = 4096 }
    commission  = { cpu = 512, memory = 1024 }
    certificate = { cpu = 1024, memory = 2048 }
    gateway     = { cpu = 512, memory = 1024 }
  }
  with_database = toset(["invoice", "product", "ocr", "commission", "certificate"])
}

resource "aws_ecs_cluster" "main" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enhanced"
  }
}

resource "aws_service_discovery_private_dns_namespace" "mesh" {
  name        = "bmc.local" # the mesh's trust domain and the sidecars' upstream names
  description = "${var.name}: where sidecars find each other"
  vpc         = module.network.vpc_id
}

# Every sidecar carries this group; only its members reach a sidecar's port.
resource "aws_security_group" "mesh" {
  name        = "${var.name}-mesh"
  description = "membership of the service mesh"
  vpc_id      = module.network.vpc_id
}

data "aws_iam_policy_document" "certificate_task" {
  statement {
    sid       = "WritesAndReadsCertificates"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:PutObjectRetention"]
    resources = ["${module.data.certificate_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadsTheSigningKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [module.data.signing_key_secret_arn]
  }
  statement {
    sid       = "UsesTheDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.data.kms_key_arn]
  }
}

module "service" {
  source                 = "../service"
  for_each               = local.sizes
  name                   = each.key
  environment_name       = var.name
  region                 = var.region
  cluster_arn            = aws_ecs_cluster.main.arn
  cluster_name           = aws_ecs_cluster.main.name
  vpc_id                 = module.network.vpc_id
  vpc_cidr               = module.network.vpc_cidr
  subnet_ids             = module.network.app_subnet_ids
  mesh_security_group_id = aws_security_group.mesh.id
  namespace_id           = aws_service_discovery_private_dns_namespace.mesh.id
  app_image              = var.app_image
  envoy_image            = var.envoy_image
  identity_image         = var.identity_image
  envoy_bootstrap        = file("${local.mesh_dir}/${each.key}.json")
  cpu                    = each.value.cpu
  memory                 = each.value.memory
  kms_key_arn            = module.data.kms_key_arn
  environment = merge(
    { BMC_JWKS = var.jwks_url, BMC_JWT_ISSUER = var.jwt_issuer },
    each.key == "certificate" ? { BMC_OBJECT_STORE_S3_BUCKET = module.data.certificate_bucket, BMC_OBJECT_STORE_S3_KMS_KEY = module.data.kms_key_arn } : {},
  )
  secrets = merge(
    { BMC_REDIS_URL = module.data.redis_url_secret_arn },
    contains(local.with_database, each.key) ? { BMC_DATABASE_URL = module.data.database_secret_arns[each.key] } : {},
  )
  task_policies = each.key == "certificate" ? { certificates = data.aws_iam_policy_document.certificate_task.json } : {}
}
