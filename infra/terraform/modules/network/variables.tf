variable "name" {
  description = "Prefix of every name (e.g. bmc-prod)."
  type        = string
}

variable "region" {
  description = "AWS region (the endpoints' service names)."
  type        = string
}

variable "cidr" {
  description = "The VPC's address range; app subnets take its first three /20s of a /16, data subnets three more."
  type        = string
  default     = "10.40.0.0/16"
}

variable "azs" {
  description = "Three Availability Zones."
  type        = list(string)
  validation {
    condition     = length(var.azs) == 3
    error_message = "The estate spans exactly three Availability Zones."
  }
}

variable "interface_endpoints" {
  description = "AWS APIs the tasks reach through interface endpoints (no NAT)."
  type        = list(string)
  default     = ["ecr.api", "ecr.dkr", "secretsmanager", "logs", "sts", "kms"]
}

variable "log_retention_days" {
  description = "How long flow logs are kept."
  type        = number
  default     = 365
}

variable "logs_kms_key_arn" {
  description = "KMS key that encrypts the log groups."
  type        = string
}
