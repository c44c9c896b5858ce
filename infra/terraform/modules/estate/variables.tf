variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "cidr" {
  type = string
}

variable "azs" {
  type = list(string)
}

variable "database_instance_class" {
  type = string
}

variable "database_storage_gb" {
  type = number
}

variable "database_max_storage_gb" {
  type = number
}

variable "redis_node_type" {
  type = string
}

variable "app_image" {
  description = "The services' image (ECR, by digest)."
  type        = string
}

variable "envoy_image" {
  description = "The Envoy sidecar image (ECR, by digest)."
  type        = string
}

variable "identity_image" {
  description = "The init container writing each task's workload certificate."
  type        = string
}

variable "jwks_url" {
  description = "JWKS of the token issuer (the Cognito user pool)."
  type        = string
}

variable "jwt_issuer" {
  description = "Expected iss of access tokens."
  type        = string
}
