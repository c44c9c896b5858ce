variable "name" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "alarm_emails" {
  description = "Who the alarms reach (each confirms the subscription)."
  type        = list(string)
  default     = []
}

variable "api_id" {
  type = string
}

variable "database_id" {
  type = string
}

variable "redis_id" {
  type = string
}

variable "consumers" {
  description = "The event consumers whose lag is watched, as <consumer>-from-<producer> (the services' subscriptions)."
  type        = list(string)
  default     = ["commission-from-invoice", "certificate-from-commission", "invoice-from-commission", "invoice-from-certificate"]
}

variable "max_5xx_percent" {
  type    = number
  default = 1
}

variable "p99_latency_ms" {
  type    = number
  default = 1000
}

variable "max_lag_seconds" {
  description = "How old the oldest unprocessed event may get (every registered invoice certified within minutes)."
  type        = number
  default     = 300
}

variable "min_free_storage_gb" {
  type    = number
  default = 20
}

variable "max_outbox_seconds" {
  description = "How long an event may wait in its service's outbox before the relay publishes it."
  type        = number
  default     = 60
}

variable "min_cache_hit_percent" {
  description = "The share of product lookups the catalog cache must answer."
  type        = number
  default     = 80
}
