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

variable "collector_image" {
  description = "The ADOT collector image (ECR mirror of public.ecr.aws/aws-observability/aws-otel-collector, by digest)."
  type        = string
}

variable "edge_certificate_arn" {
  description = "ACM certificate of the internal load balancer (edge_internal_domain)."
  type        = string
}

variable "edge_internal_domain" {
  description = "The load balancer's name as API Gateway verifies it (e.g. edge.bmc.internal)."
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
  description = "Machine clients (ERPs) and their roles; a broker client names its broker."
  type = map(object({
    roles  = list(string)
    tenant = optional(string, "")
  }))
  default = {}
}

variable "operator_cidrs" {
  description = "Address ranges (the operators' VPN) that reach the edge's gRPC port."
  type        = list(string)
  default     = []
}

variable "alarm_emails" {
  type    = list(string)
  default = []
}
