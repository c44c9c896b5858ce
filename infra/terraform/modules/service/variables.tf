variable "name" {
  description = "The service (invoice, product, ocr, commission, certificate, gateway)."
  type        = string
}

variable "environment_name" {
  description = "Prefix of names (e.g. bmc-prod)."
  type        = string
}

variable "region" {
  type = string
}

variable "trust_domain" {
  description = "SPIFFE trust domain of the mesh."
  type        = string
  default     = "bmc.local"
}

variable "cluster_arn" {
  type = string
}

variable "cluster_name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "vpc_cidr" {
  type = string
}

variable "subnet_ids" {
  description = "Private app subnets."
  type        = list(string)
}

variable "mesh_security_group_id" {
  description = "The security group every sidecar carries: membership is what lets a task dial another's sidecar."
  type        = string
}

variable "namespace_id" {
  description = "The Cloud Map private DNS namespace (bmc.local)."
  type        = string
}

variable "app_image" {
  description = "The services' image, by digest."
  type        = string
}

variable "envoy_image" {
  description = "The Envoy image, by digest."
  type        = string
}

variable "collector_image" {
  description = "The ADOT collector image (AWS Distro for OpenTelemetry), by digest."
  type        = string
}

variable "collector_config" {
  description = "The collector's configuration: ops/otel/adot-collector.yaml (spans to X-Ray, the alarms' metrics to CloudWatch)."
  type        = string
}

variable "private_ca_arn" {
  description = "The mesh's ACM Private CA: the identity container gets the task's workload certificates from it."
  type        = string
}

variable "envoy_bootstrap" {
  description = "The sidecar's bootstrap: mesh/aws/<name>.json, as rendered by `bmc mesh render`."
  type        = string
}

variable "cpu" {
  description = "Task vCPU units (1024 = 1 vCPU)."
  type        = number
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
}

variable "min_tasks" {
  type    = number
  default = 1
}

variable "max_tasks" {
  type    = number
  default = 5
  validation {
    condition     = var.max_tasks >= 1 && var.max_tasks <= 5
    error_message = "Each service runs 1 to 5 tasks."
  }
}

variable "cpu_target_percent" {
  description = "Average CPU the autoscaler keeps."
  type        = number
  default     = 60
}

variable "environment" {
  description = "Plain BMC_* settings of the service."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "BMC_* settings read from Secrets Manager at start (name → secret ARN): this service's own only."
  type        = map(string)
  default     = {}
}

variable "task_policies" {
  description = "What the service's code may call in AWS: IAM policy documents by name (none: nothing)."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type    = number
  default = 365
}

variable "edge_bootstrap" {
  description = "The gateway's task only: mesh/aws/edge.json, run by an `edge` Envoy beside the sidecar."
  type        = string
  default     = ""
}

variable "ingress" {
  description = "Who reaches the task: a security group or an address range, on a port (the mesh's group on 8443 for a service)."
  type = map(object({
    port              = number
    description       = string
    security_group_id = optional(string)
    cidr              = optional(string)
  }))
}

variable "load_balanced" {
  description = "Registered with the edge's target group (the gateway's task); scaled on requests per task too."
  type        = bool
  default     = false
}

variable "target_group_arn" {
  type    = string
  default = ""
}

variable "request_count_label" {
  description = "<load balancer>/<target group> as ALBRequestCountPerTarget names them."
  type        = string
  default     = ""
}

variable "requests_per_task_target" {
  description = "Requests a minute per task the autoscaler keeps (from bench/: a gateway task serves ~40,000 a minute at 60% CPU)."
  type        = number
  default     = 20000
}
