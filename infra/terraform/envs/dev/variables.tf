variable "environment" {
  description = "dev or prod: the names' suffix and the Environment tag."
  type        = string
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
  description = "The services' image, by digest (set by the deploy: -var app_image=...)."
  type        = string
}

variable "envoy_image" {
  description = "The Envoy sidecar image, by digest."
  type        = string
}

variable "identity_image" {
  description = "The workload-certificate init container image, by digest."
  type        = string
}

variable "jwks_url" {
  description = "JWKS of the token issuer."
  type        = string
}

variable "jwt_issuer" {
  description = "Expected iss of access tokens."
  type        = string
}
