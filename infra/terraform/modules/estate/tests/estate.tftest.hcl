# The whole environment plans (a mocked AWS provider): every module wired,
# nothing keyed on a value only known after apply, and every one of the six
# services carries its sidecar with its own rendered bootstrap.

mock_provider "aws" {
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mocked" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::bmc-test-bucket" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mocked" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mocked" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:us-east-1:123456789012:cluster/bmc-test" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/mocked:1" }
  }
  mock_resource "aws_service_discovery_service" {
    defaults = { arn = "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-mocked" }
  }
  mock_resource "aws_cognito_user_pool" {
    defaults = { id = "us-east-1_mocked", arn = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_mocked" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/bmc-test-edge/0123", arn_suffix = "app/bmc-test-edge/0123" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/bmc-test-edge/4567", arn_suffix = "targetgroup/bmc-test-edge/4567" }
  }
  mock_resource "aws_lb_listener" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/bmc-test-edge/0123/89ab" }
  }
  mock_resource "aws_wafv2_web_acl" {
    defaults = { arn = "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/bmc-test-edge/mocked" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:us-east-1:123456789012:bmc-test-alarms" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.40.0.0/16" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_resource "aws_acmpca_certificate_authority" {
    defaults = { arn = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/mesh" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_secretsmanager_random_password" {
    defaults = { random_password = "MockedAuthTokenOfSixtyFourCharactersMockedAuthTokenOfSixtyFour1" }
  }
}

variables {
  name                    = "bmc-test"
  region                  = "us-east-1"
  cidr                    = "10.40.0.0/16"
  azs                     = ["us-east-1a", "us-east-1b", "us-east-1c"]
  database_instance_class = "db.r7g.xlarge"
  database_storage_gb     = 300
  database_max_storage_gb = 1000
  redis_node_type         = "cache.r7g.large"
  app_image               = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bmc-services@sha256:0000"
  envoy_image             = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bmc-envoy@sha256:0000"
  collector_image         = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aws-otel-collector@sha256:0000"
  edge_certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/edge"
  edge_internal_domain    = "edge.bmc.internal"
  clients = {
    erp-agrocampo = { roles = ["broker"], tenant = "B0042" }
    backoffice    = { roles = ["operator"] }
  }
}

run "the_environment_plans" {
  command = plan # fails on anything keyed by a value known only after apply
}

run "one_entry_and_every_service_behind_its_own_sidecar" {
  command = apply # (mocked) so that the task definitions and ARNs are known

  assert {
    condition     = length(module.edge.client_ids) == 2
    error_message = "one app client per machine client"
  }
  assert {
    condition = alltrue([
      for name, service in module.service : one([
        for c in jsondecode(service.container_definitions) :
        one([for e in c.environment : e.value if e.name == "BMC_JWKS"]) if c.name == "app"
      ]) == "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_mocked/.well-known/jwks.json"
    ])
    error_message = "every service verifies tokens against the user pool's keys"
  }
  assert {
    condition     = alltrue([for repo in aws_ecr_repository.image : repo.image_tag_mutability == "IMMUTABLE" && repo.image_scanning_configuration[0].scan_on_push])
    error_message = "images are immutable and scanned on push"
  }
  assert {
    condition     = module.observability.dashboard_name == "bmc-test-status"
    error_message = "operators without a terminal have the status dashboard"
  }
  assert {
    condition     = length(module.observability.alarm_names) == 14
    error_message = "5xx rate, p99, four consumers' lag, dead letters, outbox, cache hits, mesh ejections and TLS, RDS CPU and storage, Redis memory"
  }

  assert {
    condition     = length(module.service) == 6
    error_message = "the five services and the REST gateway"
  }
  assert {
    condition = alltrue([
      for name, service in module.service : one([
        for c in jsondecode(service.container_definitions) :
        one([for e in c.environment : e.value if e.name == "ENVOY_BOOTSTRAP"]) if c.name == "envoy"
      ]) == file("${path.module}/../../../../mesh/aws/${name}.json")
    ])
    error_message = "each task's sidecar is configured by its own mesh/aws/<name>.json"
  }
}
