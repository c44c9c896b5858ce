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
