output "issuer" {
  description = "`iss` of the user pool's access tokens."
  value       = local.issuer
}

output "jwks_url" {
  value = "${local.issuer}/.well-known/jwks.json"
}

output "token_url" {
  description = "Where clients get tokens (client-credentials grant)."
  value       = "https://${aws_cognito_user_pool_domain.main.domain}.auth.${data.aws_region.current.name}.amazoncognito.com/oauth2/token"
}

output "scope_prefix" {
  value = "${aws_cognito_resource_server.api.identifier}/"
}

output "client_ids" {
  value = { for name, client in aws_cognito_user_pool_client.machine : name => client.id }
}

output "client_tenants" {
  description = "The broker each broker client acts for, by client id: the services read it (BMC_JWT_CLIENT_TENANTS)."
  value       = jsonencode({ for name, client in aws_cognito_user_pool_client.machine : client.id => var.clients[name].tenant if var.clients[name].tenant != "" })
}

output "api_endpoint" {
  value = aws_apigatewayv2_api.main.api_endpoint
}

output "api_id" {
  value = aws_apigatewayv2_api.main.id
}

output "target_group_arn" {
  value = aws_lb_target_group.edge.arn
}

output "load_balancer_security_group_id" {
  value = aws_security_group.alb.id
}

output "request_count_label" {
  description = "The load balancer and target group, as ALBRequestCountPerTarget names them."
  value       = "${aws_lb.edge.arn_suffix}/${aws_lb_target_group.edge.arn_suffix}"
}

output "load_balancer_arn_suffix" {
  value = aws_lb.edge.arn_suffix
}
