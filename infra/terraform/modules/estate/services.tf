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
  # checkov:skip=CKV2_AWS_5:attached to every ECS service through module.service's mesh_security_group_id (checkov does not follow module inputs)
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
  private_ca_arn         = aws_acmpca_certificate_authority.mesh.arn
  envoy_bootstrap        = file("${local.mesh_dir}/${each.key}.json")
  collector_image        = var.collector_image
  collector_config       = file("${path.module}/../../../../ops/otel/adot-collector.yaml")
  cpu                    = each.value.cpu
  memory                 = each.value.memory
  kms_key_arn            = module.data.kms_key_arn
  edge_bootstrap         = each.key == "gateway" ? file("${local.mesh_dir}/edge.json") : ""
  # Services: the mesh, on the sidecar's port. The gateway's task (with the
  # edge): the load balancer on REST, the operators' network on gRPC.
  ingress = each.key == "gateway" ? merge(
    { alb = { port = 8443, description = "REST from the internal load balancer", security_group_id = module.edge.load_balancer_security_group_id } },
    { for i, cidr in var.operator_cidrs : "operators-${i}" => { port = 8444, description = "operators' gRPC (mutual TLS, operator certificates)", cidr = cidr } },
    ) : {
    mesh = { port = 8443, description = "mutual TLS from other sidecars (the app itself listens on loopback)", security_group_id = aws_security_group.mesh.id }
  }
  load_balanced       = each.key == "gateway"
  target_group_arn    = each.key == "gateway" ? module.edge.target_group_arn : ""
  request_count_label = each.key == "gateway" ? module.edge.request_count_label : ""
  environment = merge(
    {
      BMC_JWKS               = module.edge.jwks_url
      BMC_JWT_ISSUER         = module.edge.issuer
      BMC_JWT_SCOPE_PREFIX   = module.edge.scope_prefix
      BMC_JWT_CLIENT_TENANTS = module.edge.client_tenants
    },
    each.key == "certificate" ? { BMC_OBJECT_STORE_S3_BUCKET = module.data.certificate_bucket, BMC_OBJECT_STORE_S3_KMS_KEY = module.data.kms_key_arn } : {},
  )
  secrets = merge(
    { BMC_REDIS_URL = module.data.redis_url_secret_arn },
    contains(local.with_database, each.key) ? { BMC_DATABASE_URL = module.data.database_secret_arns[each.key] } : {},
  )
  task_policies = each.key == "certificate" ? { certificates = data.aws_iam_policy_document.certificate_task.json } : {}
}
