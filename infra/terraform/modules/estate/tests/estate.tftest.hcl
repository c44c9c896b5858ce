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
  identity_image          = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bmc-identity@sha256:0000"
  jwks_url                = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example/.well-known/jwks.json"
  jwt_issuer              = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example"
}

run "the_environment_plans" {
  command = plan # fails on anything keyed by a value known only after apply
}

run "every_service_runs_behind_its_own_sidecar" {
  command = apply # (mocked) so that the task definitions are known

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
