# The single way in: API Gateway (HTTP API) with a JWT authorizer on a
# Cognito user pool, then a VPC link to an internal Application Load Balancer
# in front of the edge tasks (the mesh's edge Envoy, mesh/aws/edge.json),
# which transcode nothing themselves: they route to the REST gateway and the
# services over the mesh's mutual TLS. WAF guards the load balancer and the
# user pool (it cannot attach to an HTTP API).
#
# Tokens: ERPs and back offices get access tokens from Cognito's token
# endpoint with the client-credentials grant. Their scopes are the platform's
# roles (<api_identifier>/broker, …); a broker client's tenant is fixed by its
# app client (`client_tenants`), so no token can name another broker.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

data "aws_region" "current" {}

locals {
  roles = {
    admin    = "Administers the registry: tariffs, catalog, revocations"
    operator = "Back office of the exchange: every broker's invoices"
    broker   = "A broker's ERP: its own invoices only"
    auditor  = "DIAN and internal audit: reads everything, changes nothing"
  }
  issuer = "https://cognito-idp.${data.aws_region.current.name}.amazonaws.com/${aws_cognito_user_pool.main.id}"
}

# --- Cognito: who may call, with what roles --------------------------------------

resource "aws_cognito_user_pool" "main" {
  name                = var.name
  deletion_protection = "ACTIVE"
  mfa_configuration   = "ON" # people (operators in the hosted UI) use TOTP; machine clients use secrets
  software_token_mfa_configuration {
    enabled = true
  }
  admin_create_user_config {
    allow_admin_create_user_only = true
  }
  password_policy {
    minimum_length                   = 14
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = true
    temporary_password_validity_days = 1
  }
  user_pool_add_ons {
    advanced_security_mode = "ENFORCED"
  }
}

resource "aws_cognito_user_pool_domain" "main" {
  domain       = "${var.name}-auth"
  user_pool_id = aws_cognito_user_pool.main.id
}

resource "aws_cognito_resource_server" "api" {
  identifier   = var.api_identifier
  name         = "${var.name} API"
  user_pool_id = aws_cognito_user_pool.main.id
  dynamic "scope" {
    for_each = local.roles
    content {
      scope_name        = scope.key
      scope_description = scope.value
    }
  }
}

resource "aws_cognito_user_pool_client" "machine" {
  for_each                             = var.clients
  name                                 = each.key
  user_pool_id                         = aws_cognito_user_pool.main.id
  generate_secret                      = true
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["client_credentials"]
  allowed_oauth_scopes                 = [for role in each.value.roles : "${aws_cognito_resource_server.api.identifier}/${role}"]
  supported_identity_providers         = ["COGNITO"]
  explicit_auth_flows                  = ["ALLOW_REFRESH_TOKEN_AUTH"]
  enable_token_revocation              = true
  prevent_user_existence_errors        = "ENABLED"
  access_token_validity                = 15
  token_validity_units {
    access_token = "minutes"
  }
}

# --- The internal load balancer in front of the edge tasks -----------------------

resource "aws_security_group" "alb" {
  name        = "${var.name}-edge-alb"
  description = "internal load balancer: HTTPS from the VPC link only"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "vpc_link" {
  name        = "${var.name}-vpc-link"
  description = "API Gateway's VPC link"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  security_group_id            = aws_security_group.alb.id
  referenced_security_group_id = aws_security_group.vpc_link.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS from API Gateway's VPC link"
}

resource "aws_vpc_security_group_egress_rule" "vpc_link" {
  security_group_id            = aws_security_group.vpc_link.id
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "to the internal load balancer only"
}

resource "aws_vpc_security_group_egress_rule" "alb" {
  security_group_id = aws_security_group.alb.id
  cidr_ipv4         = data.aws_vpc.main.cidr_block
  ip_protocol       = "tcp"
  from_port         = 8443
  to_port           = 8443
  description       = "the edge tasks' HTTPS port"
}

data "aws_vpc" "main" {
  id = var.vpc_id
}

resource "aws_lb" "edge" {
  name                       = "${var.name}-edge"
  internal                   = true
  load_balancer_type         = "application"
  subnets                    = var.subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # checkov:skip=CKV_AWS_91:every request is logged by API Gateway's access log (the load balancer sees only the VPC link's traffic)
  # checkov:skip=CKV2_AWS_20:there is no HTTP listener to redirect; the load balancer listens on HTTPS only
}

resource "aws_lb_target_group" "edge" {
  name                 = "${var.name}-edge"
  port                 = 8443
  protocol             = "HTTPS"
  protocol_version     = "HTTP1"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  health_check {
    protocol            = "HTTPS"
    path                = "/healthz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.edge.arn
  port              = 443
  protocol          = "HTTPS"
  # TLS 1.3 and 1.2: API Gateway's private integrations do not promise TLS 1.3.
  ssl_policy      = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn = var.listener_certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge.arn
  }
}

# --- API Gateway: the single public entry --------------------------------------

resource "aws_apigatewayv2_vpc_link" "edge" {
  name               = "${var.name}-edge"
  subnet_ids         = var.subnet_ids
  security_group_ids = [aws_security_group.vpc_link.id]
}

resource "aws_apigatewayv2_api" "main" {
  name                         = var.name
  protocol_type                = "HTTP"
  description                  = "BMC Registry: invoices, catalog, commissions, certificates"
  disable_execute_api_endpoint = var.domain_name != ""
}

resource "aws_apigatewayv2_authorizer" "cognito" {
  api_id           = aws_apigatewayv2_api.main.id
  name             = "cognito"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]
  jwt_configuration {
    issuer = local.issuer
    # Cognito access tokens carry no `aud`: API Gateway matches `client_id` against these.
    audience = [for client in aws_cognito_user_pool_client.machine : client.id]
  }
}

resource "aws_apigatewayv2_integration" "edge" {
  api_id               = aws_apigatewayv2_api.main.id
  integration_type     = "HTTP_PROXY"
  integration_method   = "ANY"
  integration_uri      = aws_lb_listener.https.arn
  connection_type      = "VPC_LINK"
  connection_id        = aws_apigatewayv2_vpc_link.edge.id
  timeout_milliseconds = 30000
  tls_config {
    server_name_to_verify = var.internal_domain
  }
}

resource "aws_apigatewayv2_route" "authorized" {
  api_id               = aws_apigatewayv2_api.main.id
  route_key            = "$default"
  target               = "integrations/${aws_apigatewayv2_integration.edge.id}"
  authorization_type   = "JWT"
  authorizer_id        = aws_apigatewayv2_authorizer.cognito.id
  authorization_scopes = [for role in keys(local.roles) : "${aws_cognito_resource_server.api.identifier}/${role}"]
}

resource "aws_apigatewayv2_route" "public" {
  for_each  = toset(var.public_routes)
  api_id    = aws_apigatewayv2_api.main.id
  route_key = each.value
  target    = "integrations/${aws_apigatewayv2_integration.edge.id}"
  # checkov:skip=CKV_AWS_309:public certificate verification is open by design (anyone holding a certificate checks it); every other route needs a token
}

resource "aws_cloudwatch_log_group" "access" {
  name              = "/bmc/${var.name}/api-access"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_apigatewayv2_stage" "main" {
  api_id      = aws_apigatewayv2_api.main.id
  name        = "$default"
  auto_deploy = true
  default_route_settings {
    throttling_rate_limit  = var.throttle_rate
    throttling_burst_limit = var.throttle_burst
  }
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access.arn
    format = jsonencode({
      requestId         = "$context.requestId", ip = "$context.identity.sourceIp", client = "$context.authorizer.claims.client_id",
      route             = "$context.routeKey", status = "$context.status", latencyMs = "$context.responseLatency",
      integrationStatus = "$context.integrationStatus", error = "$context.authorizer.error",
    })
  }
}

resource "aws_apigatewayv2_domain_name" "main" {
  count       = var.domain_name == "" ? 0 : 1
  domain_name = var.domain_name
  domain_name_configuration {
    certificate_arn = var.domain_certificate_arn
    endpoint_type   = "REGIONAL"
    security_policy = "TLS_1_2" # the only policy HTTP APIs offer; see the README's TLS table
  }
}

resource "aws_apigatewayv2_api_mapping" "main" {
  count       = var.domain_name == "" ? 0 : 1
  api_id      = aws_apigatewayv2_api.main.id
  domain_name = aws_apigatewayv2_domain_name.main[0].id
  stage       = aws_apigatewayv2_stage.main.id
}

# --- WAF: on the load balancer and on the user pool's token endpoint -------------

resource "aws_wafv2_web_acl" "edge" {
  name  = "${var.name}-edge"
  scope = "REGIONAL"
  # checkov:skip=CKV_AWS_192:AWSManagedRulesKnownBadInputsRuleSet (in the dynamic rules below) is the Log4j rule group; checkov does not expand dynamic blocks
  default_action {
    allow {}
  }
  dynamic "rule" {
    for_each = {
      AWSManagedRulesCommonRuleSet          = 10
      AWSManagedRulesKnownBadInputsRuleSet  = 20
      AWSManagedRulesAmazonIpReputationList = 30
      AWSManagedRulesSQLiRuleSet            = 40
    }
    content {
      name     = rule.key
      priority = rule.value
      override_action {
        none {}
      }
      statement {
        managed_rule_group_statement {
          vendor_name = "AWS"
          name        = rule.key
        }
      }
      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = rule.key
        sampled_requests_enabled   = true
      }
    }
  }
  rule {
    name     = "per-client-rate"
    priority = 1
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit = var.waf_rate_limit
        # Behind API Gateway every request comes from the VPC link: the client is in X-Forwarded-For.
        aggregate_key_type = "FORWARDED_IP"
        forwarded_ip_config {
          header_name       = "X-Forwarded-For"
          fallback_behavior = "MATCH"
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "per-client-rate"
      sampled_requests_enabled   = true
    }
  }
  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-edge"
    sampled_requests_enabled   = true
  }
}

resource "aws_wafv2_web_acl_association" "alb" {
  resource_arn = aws_lb.edge.arn
  web_acl_arn  = aws_wafv2_web_acl.edge.arn
}

resource "aws_wafv2_web_acl_association" "user_pool" {
  resource_arn = aws_cognito_user_pool.main.arn
  web_acl_arn  = aws_wafv2_web_acl.edge.arn
}

resource "aws_cloudwatch_log_group" "waf" {
  name              = "aws-waf-logs-${var.name}" # WAF requires the prefix
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_wafv2_web_acl_logging_configuration" "edge" {
  resource_arn            = aws_wafv2_web_acl.edge.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
}
