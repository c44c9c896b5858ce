variable "name" {
  description = "Prefix of every name (e.g. bmc-prod)."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "vpc_id" {
  description = "The estate's VPC."
  type        = string
}

variable "subnet_ids" {
  description = "The private data subnets, one per Availability Zone."
  type        = list(string)
}

variable "client_security_groups" {
  description = "Security group of each service's tasks, by service: the only ones that reach PostgreSQL and Redis."
  type        = map(string)
  default     = {}
}

variable "postgres_version" {
  description = "RDS PostgreSQL engine version."
  type        = string
  default     = "17.6"
}

variable "database_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "database_storage_gb" {
  description = "Initial gp3 storage: the 60M-product catalog with its indexes, the invoice event store and headroom (see the README)."
  type        = number
}

variable "database_max_storage_gb" {
  description = "Ceiling of storage autoscaling."
  type        = number
}

variable "backup_retention_days" {
  description = "Automated backups kept (point-in-time recovery within them)."
  type        = number
  default     = 35
  validation {
    condition     = var.backup_retention_days >= 7
    error_message = "Keep at least a week of backups."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "certificate_retention_years" {
  description = "Object Lock retention of issued certificates (Ley 962 de 2005, art. 28: ten years)."
  type        = number
  default     = 10
}

variable "services" {
  description = "The services that own a database."
  type        = list(string)
  default     = ["invoice", "product", "ocr", "commission", "certificate"]
}
