# The single entry, planned with a mocked AWS provider: tokens from Cognito
# (client credentials, scopes per role), a JWT authorizer on every route but
# public verification, a private path to the edge, WAF in front of it.

mock_provider "aws" {
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
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mocked" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.40.0.0/16" }
  }
}

variables {
  name                     = "bmc-test"
  vpc_id                   = "vpc-0123456789abcdef0"
  subnet_ids               = ["subnet-a", "subnet-b", "subnet-c"]
  kms_key_arn              = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  listener_certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/edge"
  internal_domain          = "edge.bmc.internal"
  clients = {
    erp-agrocampo = { roles = ["broker"], tenant = "B0042" }
    backoffice    = { roles = ["operator", "auditor"] }
  }
}

# One mocked apply for every property (each run costs a provider start and a plan).
run "one_entry_tokens_from_cognito_a_private_path_and_waf" {
  command = apply

  assert {
    condition     = alltrue([for c in aws_cognito_user_pool_client.machine : c.allowed_oauth_flows == toset(["client_credentials"]) && c.generate_secret])
    error_message = "machine clients use the client-credentials grant, with a secret"
  }
  assert {
    condition     = aws_cognito_user_pool_client.machine["erp-agrocampo"].allowed_oauth_scopes == toset(["https://api.bmc-registry.co/broker"])
    error_message = "a client's scopes are its roles, nothing more"
  }
  assert {
    condition     = toset([for s in aws_cognito_resource_server.api.scope : s.scope_name]) == toset(["admin", "operator", "broker", "auditor"])
    error_message = "one scope per role of the platform"
  }
  assert {
    condition     = jsondecode(output.client_tenants) == { (aws_cognito_user_pool_client.machine["erp-agrocampo"].id) = "B0042" }
    error_message = "a broker client's tenant is fixed by its app client"
  }

  assert {
    condition     = aws_apigatewayv2_authorizer.cognito.authorizer_type == "JWT" && one(aws_apigatewayv2_authorizer.cognito.jwt_configuration).issuer == "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_mocked"
    error_message = "the authorizer checks the user pool's tokens"
  }
  assert {
    condition     = toset(one(aws_apigatewayv2_authorizer.cognito.jwt_configuration).audience) == toset([for c in aws_cognito_user_pool_client.machine : c.id])
    error_message = "only the registry's own app clients are accepted"
  }
  assert {
    condition     = aws_apigatewayv2_route.authorized.route_key == "$default" && aws_apigatewayv2_route.authorized.authorization_type == "JWT"
    error_message = "the default route needs a token"
  }
  assert {
    condition     = alltrue([for r in aws_apigatewayv2_route.public : startswith(r.route_key, "GET /")])
    error_message = "public routes only read"
  }

  assert {
    condition     = aws_lb.edge.internal && aws_apigatewayv2_integration.edge.connection_type == "VPC_LINK"
    error_message = "the load balancer is internal, reached through the VPC link"
  }
  assert {
    condition     = aws_lb_listener.https.protocol == "HTTPS" && startswith(aws_lb_listener.https.ssl_policy, "ELBSecurityPolicy-TLS13")
    error_message = "the load balancer speaks TLS 1.3 (and 1.2)"
  }
  assert {
    condition     = aws_lb_target_group.edge.protocol == "HTTPS"
    error_message = "TLS all the way to the edge task"
  }

  assert {
    condition     = aws_wafv2_web_acl_association.alb.resource_arn == aws_lb.edge.arn && aws_wafv2_web_acl_association.user_pool.resource_arn == aws_cognito_user_pool.main.arn
    error_message = "WAF sits on the load balancer and the user pool"
  }
  assert {
    condition     = length([for r in aws_wafv2_web_acl.edge.rule : r if length(r.statement[0].managed_rule_group_statement) > 0]) >= 3
    error_message = "AWS managed rule groups are on"
  }
  assert {
    condition     = one([for r in aws_wafv2_web_acl.edge.rule : r.statement[0].rate_based_statement[0].aggregate_key_type if r.name == "per-client-rate"]) == "FORWARDED_IP"
    error_message = "rate limits count each client (X-Forwarded-For), not the VPC link"
  }
}

run "a_broker_client_without_its_broker_is_refused" {
  command = plan
  variables {
    clients = { erp-nobody = { roles = ["broker"] } }
  }
  expect_failures = [var.clients]
}
