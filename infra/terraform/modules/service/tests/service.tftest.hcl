# One service's task, planned with a mocked AWS provider: the sidecar and its
# bootstrap, a read-only and non-root task, the app reachable only through
# the sidecar, 1–5 tasks.

mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name                   = "product"
  environment_name       = "bmc-test"
  region                 = "us-east-1"
  cluster_arn            = "arn:aws:ecs:us-east-1:123456789012:cluster/bmc-test"
  cluster_name           = "bmc-test"
  vpc_id                 = "vpc-0123456789abcdef0"
  vpc_cidr               = "10.40.0.0/16"
  subnet_ids             = ["subnet-a", "subnet-b", "subnet-c"]
  mesh_security_group_id = "sg-mesh"
  namespace_id           = "ns-bmc"
  app_image              = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bmc-services@sha256:0000"
  envoy_image            = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bmc-envoy@sha256:0000"
  collector_image        = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aws-otel-collector@sha256:0000"
  collector_config       = file("../../../../ops/otel/adot-collector.yaml")
  private_ca_arn         = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/mesh"
  envoy_bootstrap        = file("../../../../mesh/aws/product.json")
  cpu                    = 512
  memory                 = 1024
  kms_key_arn            = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  secrets                = { BMC_DATABASE_URL = "arn:aws:secretsmanager:us-east-1:123456789012:secret:bmc-test/product/database" }
  ingress                = { mesh = { port = 8443, description = "mutual TLS from other sidecars", security_group_id = "sg-mesh" } }
}

run "the_task_carries_its_envoy_sidecar_with_the_rendered_bootstrap" {
  command = plan

  assert {
    condition     = one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : c.essential if c.name == "envoy"])
    error_message = "every task runs an essential Envoy sidecar"
  }
  assert {
    condition = one([
      for c in jsondecode(aws_ecs_task_definition.service.container_definitions) :
      one([for e in c.environment : e.value if e.name == "ENVOY_BOOTSTRAP"]) if c.name == "envoy"
    ]) == file("../../../../mesh/aws/product.json")
    error_message = "the sidecar's bootstrap is the mesh renderer's AWS output, unchanged"
  }
  assert {
    condition     = one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : c.dependsOn[0] if c.name == "envoy"]) == { containerName = "identity", condition = "HEALTHY" }
    error_message = "Envoy starts once the identity container has installed a valid certificate"
  }
  assert {
    condition     = one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : one([for e in c.environment : e.value if e.name == "BMC_IDENTITIES"]) if c.name == "identity"]) == "spiffe://bmc.local/service/product"
    error_message = "the task's certificate names the service's own SPIFFE ID"
  }
}

run "the_collector_beside_the_service_takes_its_spans_and_metrics" {
  command = plan

  assert {
    condition     = one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : one([for e in c.environment : e.value if e.name == "AOT_CONFIG_CONTENT"]) if c.name == "otel"]) == file("../../../../ops/otel/adot-collector.yaml")
    error_message = "the ADOT collector runs ops/otel/adot-collector.yaml, unchanged"
  }
  assert {
    condition     = one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : c.essential if c.name == "otel"]) == false
    error_message = "a stopped collector does not stop registrations"
  }
  assert {
    condition     = one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : one([for e in c.environment : e.value if e.name == "BMC_OTLP_ENDPOINT"]) if c.name == "app"]) == "http://127.0.0.1:4317"
    error_message = "the service exports its spans to the collector on the task's loopback"
  }
  assert {
    condition = (
      one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : one([for e in c.environment : e.value if e.name == "BMC_METRICS_PORT"]) if c.name == "app"]) ==
      one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : one([for e in c.environment : e.value if e.name == "BMC_METRICS_PORT"]) if c.name == "otel"])
    )
    error_message = "the collector scrapes the port the service serves /metrics on"
  }
}

run "every_container_is_read_only_and_not_root" {
  command = plan

  assert {
    condition     = alltrue([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : c.readonlyRootFilesystem])
    error_message = "every container has a read-only root filesystem"
  }
  assert {
    condition     = alltrue([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : try(c.user, "root") != "root" && try(c.user, "0") != "0"])
    error_message = "no container runs as root"
  }
}

run "only_the_sidecar_is_reachable" {
  command = plan

  assert {
    condition     = length(one([for c in jsondecode(aws_ecs_task_definition.service.container_definitions) : try(c.portMappings, []) if c.name == "app"])) == 0
    error_message = "the app exposes no port: it listens on the task's loopback, behind its sidecar"
  }
  assert {
    condition     = alltrue([for rule in aws_vpc_security_group_ingress_rule.mesh : rule.referenced_security_group_id == "sg-mesh" && rule.cidr_ipv4 == null && rule.from_port == 8443 && rule.to_port == 8443])
    error_message = "only other sidecars (the mesh's security group) reach the sidecar's port"
  }
  assert {
    condition     = !one(aws_ecs_service.service.network_configuration).assign_public_ip
    error_message = "tasks get no public address"
  }
}

run "one_to_five_tasks" {
  command = plan

  assert {
    condition     = aws_appautoscaling_target.service.min_capacity >= 1 && aws_appautoscaling_target.service.max_capacity <= 5
    error_message = "autoscaling stays within 1 to 5 tasks"
  }
  assert {
    condition     = one(aws_ecs_service.service.deployment_circuit_breaker).rollback
    error_message = "a failed deployment rolls back"
  }
}

run "more_than_five_tasks_is_refused" {
  command = plan
  variables {
    max_tasks = 6
  }
  expect_failures = [var.max_tasks]
}

run "the_gateway_task_carries_the_edge_behind_the_load_balancer" {
  command = plan
  variables {
    name                = "gateway"
    envoy_bootstrap     = file("../../../../mesh/aws/gateway.json")
    edge_bootstrap      = file("../../../../mesh/aws/edge.json")
    secrets             = {}
    ingress             = { edge = { port = 8443, description = "the load balancer", security_group_id = "sg-alb" } }
    load_balanced       = true
    target_group_arn    = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/bmc-test-edge/0123456789abcdef"
    request_count_label = "app/bmc-test-edge/0123/targetgroup/bmc-test-edge/4567"
  }

  assert {
    condition = one([
      for c in jsondecode(aws_ecs_task_definition.service.container_definitions) :
      one([for e in c.environment : e.value if e.name == "ENVOY_BOOTSTRAP"]) if c.name == "edge"
    ]) == file("../../../../mesh/aws/edge.json")
    error_message = "the edge Envoy runs the mesh renderer's edge.json, unchanged"
  }
  assert {
    condition     = one(aws_ecs_service.service.load_balancer).container_name == "edge" && one(aws_ecs_service.service.load_balancer).container_port == 8443
    error_message = "the load balancer reaches the edge Envoy, never the app or the sidecar"
  }
  assert {
    condition     = aws_appautoscaling_policy.requests[0].target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ALBRequestCountPerTarget"
    error_message = "the gateway also scales on requests per task"
  }
  assert {
    condition     = alltrue([for rule in aws_vpc_security_group_ingress_rule.mesh : rule.referenced_security_group_id == "sg-alb"])
    error_message = "only the load balancer reaches the edge"
  }
}
