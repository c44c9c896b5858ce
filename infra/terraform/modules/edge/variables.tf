variable "name" {
  description = "Prefix of every name (e.g. bmc-prod)."
  type        = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets of the internal load balancer and the VPC link."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "The estate's key: logs and the alarm topic."
  type        = string
}

variable "listener_certificate_arn" {
  description = "ACM certificate of the internal load balancer's HTTPS listener (the name API Gateway verifies)."
  type        = string
}

variable "internal_domain" {
  description = "The name in that certificate, which API Gateway checks when it connects through the VPC link."
  type        = string
}

variable "domain_name" {
  description = "The public API's custom domain (empty: the execute-api endpoint only)."
  type        = string
  default     = ""
}

variable "domain_certificate_arn" {
  description = "ACM certificate of the custom domain."
  type        = string
  default     = ""
}

variable "api_identifier" {
  description = "The Cognito resource server: access-token scopes are <identifier>/<role>."
  type        = string
  default     = "https://api.bmc-registry.co"
}

variable "clients" {
  description = "Machine clients (ERPs, back offices) by name: the roles their tokens carry and, for brokers, the broker they act for."
  type = map(object({
    roles  = list(string)
    tenant = optional(string, "")
  }))
  default = {}
  validation {
    condition     = alltrue([for c in values(var.clients) : length(c.roles) > 0 && alltrue([for r in c.roles : contains(["admin", "operator", "broker", "auditor"], r)])])
    error_message = "Each client has roles among admin, operator, broker and auditor."
  }
  validation {
    condition     = alltrue([for c in values(var.clients) : !contains(c.roles, "broker") || c.tenant != ""])
    error_message = "A broker client names the broker (tenant) it acts for."
  }
}

variable "public_routes" {
  description = "Routes served without a token: public certificate verification (page and RPC) and the API's documents."
  type        = list(string)
  default = [
    "GET /verify", "GET /verify/{code}", "GET /v1/verifications/{code}", "GET /v1/certificates:verify",
    "GET /openapi.json", "GET /docs",
  ]
}

variable "throttle_rate" {
  description = "Requests per second API Gateway admits across the API (the seed's 10,000 invoices an hour is ~3/s)."
  type        = number
  default     = 500
}

variable "throttle_burst" {
  type    = number
  default = 1000
}

variable "waf_rate_limit" {
  description = "Requests per client address in any 5 minutes before WAF blocks it."
  type        = number
  default     = 3000
}

variable "log_retention_days" {
  type    = number
  default = 365
}
