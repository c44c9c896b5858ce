# One service of the platform on ECS Fargate: a task of four containers —
# the identity init container (writes the workload certificate where the
# sidecar's SDS files point), the Envoy sidecar (its bootstrap is exactly the
# mesh renderer's AWS output, mesh/aws/<name>.json), the ADOT collector (the
# service's spans to X-Ray, the alarms' metrics to CloudWatch:
# ops/otel/adot-collector.yaml) and the service itself, which listens on the
# task's loopback only, so the sidecar is the one way in. Registered in Cloud Map under <name>.<namespace>; 1–5 tasks scaled on
# CPU; a failed deployment rolls back.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

locals {
  sidecar_port = 8443
  metrics_port = 9464 # the service's /metrics, on the task's loopback: the collector scrapes it
  envoy_admin  = 9901 # the sidecar's admin (services.mesh.render.aws_placement)
  identities   = concat([var.name], var.edge_bootstrap == "" ? [] : ["edge"])
  # Each Envoy of the task: its sidecar and, in the gateway's task, the edge
  # (mesh/aws/edge.json: REST from the load balancer on 8443, operators' gRPC
  # on 8444; the sidecar then only carries the gateway's calls out). The
  # bootstrap travels in the task definition; Envoy reads it from a volume of
  # its own, so the root filesystem stays read-only.
  envoys = merge(
    {
      envoy = {
        bootstrap   = var.envoy_bootstrap
        concurrency = 1
        ports       = var.edge_bootstrap == "" ? { mesh = local.sidecar_port } : {}
      }
    },
    var.edge_bootstrap == "" ? {} : {
      edge = {
        bootstrap   = var.edge_bootstrap
        concurrency = 2
        ports       = { rest = local.sidecar_port, grpc = local.sidecar_port + 1 }
      }
    },
  )
  envoy_containers = [
    for name, envoy in local.envoys : {
      name                   = name
      image                  = var.envoy_image
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10101"
      entryPoint             = ["/bin/sh", "-c"]
      # --base-id: two Envoys in one task must not share their shared-memory region.
      command      = ["printf '%s' \"$ENVOY_BOOTSTRAP\" > /run/${name}/bootstrap.json && exec envoy -c /run/${name}/bootstrap.json --concurrency ${envoy.concurrency} --base-id ${name == "edge" ? 1 : 0}"]
      environment  = [{ name = "ENVOY_BOOTSTRAP", value = envoy.bootstrap }]
      portMappings = [for port_name, port in envoy.ports : { containerPort = port, protocol = "tcp", name = port_name }]
      mountPoints = [
        { sourceVolume = "tls", containerPath = "/etc/envoy/tls", readOnly = true },
        { sourceVolume = name, containerPath = "/run/${name}" },
      ]
      dependsOn        = [{ containerName = "identity", condition = "HEALTHY" }]
      logConfiguration = local.logs
    }
  ]
  containers = concat([
    {
      # Issues the task's workload certificates from ACM Private CA, installs
      # them where the bootstraps look and renews them (services.mesh.workload_identity).
      name                   = "identity"
      image                  = var.app_image
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10001"
      command                = ["services.mesh.workload_identity"]
      environment = [
        { name = "BMC_IDENTITIES", value = join(" ", [for n in local.identities : "spiffe://${var.trust_domain}/service/${n}"]) },
        { name = "BMC_PCA_ARN", value = var.private_ca_arn },
      ]
      mountPoints = [{ sourceVolume = "tls", containerPath = "/etc/envoy/tls" }]
      healthCheck = {
        command     = ["CMD", "python", "-m", "services.mesh.workload_identity", "--check"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      logConfiguration = local.logs
    },
    {
      name                   = "app"
      image                  = var.app_image
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10001"
      command                = ["services.${var.name}.main"] # after the image's entry point, `python -m`
      environment = [for k, v in merge(var.environment, {
        BMC_MESH           = "1"
        BMC_MESH_PLACEMENT = "aws"
        BMC_LOG_FORMAT     = "json"
        BMC_OTLP_ENDPOINT  = "http://127.0.0.1:4317"
        BMC_METRICS_PORT   = tostring(local.metrics_port)
      }) : { name = k, value = v }]
      secrets     = [for k, arn in var.secrets : { name = k, valueFrom = arn }]
      mountPoints = [{ sourceVolume = "scratch", containerPath = "/tmp" }]
      healthCheck = {
        command     = ["CMD", "python", "-m", "services.kit.probe", var.name]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      dependsOn        = [{ containerName = "envoy", condition = "START" }]
      logConfiguration = local.logs
    },
    {
      # Not essential: if the collector stops, registrations go on; the alarms
      # that treat missing data as breaching (consumer lag, outbox) then page.
      name                   = "otel"
      image                  = var.collector_image
      essential              = false
      readonlyRootFilesystem = true
      user                   = "10001"
      environment = [
        { name = "AOT_CONFIG_CONTENT", value = var.collector_config },
        { name = "BMC_METRICS_PORT", value = tostring(local.metrics_port) },
        { name = "ENVOY_ADMIN_PORT", value = tostring(local.envoy_admin) },
        { name = "BMC_METRICS_LOG_GROUP", value = aws_cloudwatch_log_group.metrics.name },
      ]
      logConfiguration = local.logs
    },
  ], local.envoy_containers)
  logs = {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.service.name
      awslogs-region        = var.region
      awslogs-stream-prefix = var.name
    }
  }
}

resource "aws_cloudwatch_log_group" "service" {
  name              = "/bmc/${var.environment_name}/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# The embedded-metric logs the collector writes; CloudWatch makes the BMC/* metrics of them.
resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/bmc/${var.environment_name}/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_ecs_task_definition" "service" {
  family                   = "${var.environment_name}-${var.name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.containers)
  volume {
    name = "tls"
  }
  volume {
    name = "scratch"
  }
  dynamic "volume" {
    for_each = local.envoys # a bootstrap volume per Envoy
    content {
      name = volume.key
    }
  }
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
  }
}

resource "aws_security_group" "service" {
  name        = "${var.environment_name}-${var.name}"
  description = "${var.name}: its sidecar's inbound port, from the mesh only"
  vpc_id      = var.vpc_id
}

# Who reaches the task, on which port: by default the mesh, on the sidecar's
# port (the app itself listens on loopback).
resource "aws_vpc_security_group_ingress_rule" "mesh" {
  for_each                     = var.ingress
  security_group_id            = aws_security_group.service.id
  referenced_security_group_id = each.value.security_group_id
  cidr_ipv4                    = each.value.cidr
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = each.value.description
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.service.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 0
  to_port           = 65535
  description       = "other sidecars, the data stores and the VPC endpoints; nothing outside the VPC"
}

resource "aws_service_discovery_service" "service" {
  name = var.name
  dns_config {
    namespace_id   = var.namespace_id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
}

resource "aws_ecs_service" "service" {
  name                   = var.name
  cluster                = var.cluster_arn
  task_definition        = aws_ecs_task_definition.service.arn
  desired_count          = var.min_tasks
  launch_type            = "FARGATE"
  enable_execute_command = false
  propagate_tags         = "SERVICE"
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.service.id, var.mesh_security_group_id]
    assign_public_ip = false
  }
  service_registries {
    registry_arn = aws_service_discovery_service.service.arn
  }
  dynamic "load_balancer" {
    for_each = var.load_balanced ? ["edge"] : []
    content {
      target_group_arn = var.target_group_arn
      container_name   = load_balancer.value
      container_port   = local.sidecar_port
    }
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  lifecycle {
    ignore_changes = [desired_count] # the autoscaler owns it
  }
}

resource "aws_appautoscaling_target" "service" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.service.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.environment_name}-${var.name}-cpu"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  resource_id        = aws_appautoscaling_target.service.resource_id
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension
  policy_type        = "TargetTrackingScaling"
  target_tracking_scaling_policy_configuration {
    target_value = var.cpu_target_percent
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    scale_in_cooldown  = 120
    scale_out_cooldown = 30
  }
}

# Behind the load balancer, requests per task too: CPU lags a burst of small requests.
resource "aws_appautoscaling_policy" "requests" {
  count              = var.load_balanced ? 1 : 0
  name               = "${var.environment_name}-${var.name}-requests"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  resource_id        = aws_appautoscaling_target.service.resource_id
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension
  policy_type        = "TargetTrackingScaling"
  target_tracking_scaling_policy_configuration {
    target_value = var.requests_per_task_target
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = var.request_count_label
    }
    scale_in_cooldown  = 120
    scale_out_cooldown = 30
  }
}

# --- Roles: what this service's tasks may do, and nothing more ----------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The execution role starts the task: it pulls the images, writes the logs and
# reads this service's own secrets (its database login), no one else's.
resource "aws_iam_role" "execution" {
  name               = "${var.environment_name}-${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = length(var.secrets) > 0 ? values(var.secrets) : ["arn:aws:secretsmanager:${var.region}:000000000000:secret:none"]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "secrets" {
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets.json
}

# The task role is what the service's own code may call.
resource "aws_iam_role" "task" {
  name               = "${var.environment_name}-${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

# The identity container's certificates: issued by the mesh's private CA,
# only with the template that keeps the request's SPIFFE ID.
data "aws_iam_policy_document" "identity" {
  statement {
    actions   = ["acm-pca:IssueCertificate"]
    resources = [var.private_ca_arn]
    condition {
      test     = "StringEquals"
      variable = "acm-pca:TemplateArn"
      values   = ["arn:aws:acm-pca:::template/EndEntityCertificate_CSRPassthrough/V1"]
    }
  }
  statement {
    actions   = ["acm-pca:GetCertificate", "acm-pca:GetCertificateAuthorityCertificate"]
    resources = [var.private_ca_arn]
  }
}

resource "aws_iam_role_policy" "identity" {
  name   = "workload-identity"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.identity.json
}

# The collector's: spans to X-Ray, metrics as embedded-metric logs to its own log group.
data "aws_iam_policy_document" "telemetry" {
  statement {
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"] # X-Ray's actions take no resource
  }
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
}

resource "aws_iam_role_policy" "telemetry" {
  name   = "telemetry"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.telemetry.json
}

resource "aws_iam_role_policy" "task" {
  for_each = var.task_policies # keyed by names, known at plan time (the documents are not)
  name     = each.key
  role     = aws_iam_role.task.id
  policy   = each.value
}
