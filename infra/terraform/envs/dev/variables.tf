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

variable "collector_image" {
  description = "The ADOT collector image, by digest."
  type        = string
}

variable "edge_certificate_arn" {
  description = "ACM certificate of the internal load balancer."
  type        = string
}

variable "edge_internal_domain" {
  description = "The name in that certificate."
  type        = string
}

variable "domain_name" {
  description = "The public API's domain (empty: API Gateway's own endpoint)."
  type        = string
  default     = ""
}

variable "domain_certificate_arn" {
  type    = string
  default = ""
}

variable "clients" {
  description = "Machine clients (ERPs) by name: roles, and the broker a broker client acts for."
  type = map(object({
    roles  = list(string)
    tenant = optional(string, "")
  }))
  default = {}
}

variable "operator_cidrs" {
  type    = list(string)
  default = []
}

variable "alarm_emails" {
  type    = list(string)
  default = []
}
