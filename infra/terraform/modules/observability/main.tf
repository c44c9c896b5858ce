# What wakes someone up: one SNS topic, and alarms on the objectives that
# matter to brokers and to DIAN — registrations answered (5xx rate, p99
# latency), events flowing (consumer lag: every registered invoice charged and
# certified; no event lost: dead letters, the outbox draining), the catalog
# answering from its cache, the mesh healthy, and the stores' headroom (RDS CPU
# and storage, Redis memory).
#
# Each alarm on an objective carries the tag `slo`, named as the `slo` label of
# the Prometheus rules in ops/prometheus/slo-rules.yml: the same objectives in
# both places (tests/integration/test_slo_rules.py compares the two lists).
#
# The BMC/* metrics are the services' and sidecars' own Prometheus metrics,
# renamed and shipped to CloudWatch by the ADOT collector beside each task
# (ops/otel/adot-collector.yaml; tests/integration/test_collector_config.py
# checks that every metric an alarm here reads is made there). Where silence
# could hide a fault (a collector or a consumer stopped), missing data counts
# as breaching.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  actions = [aws_sns_topic.alarms.arn]
}

# 5xx ratio of the public API, over requests (metric math), so a quiet night
# with one error does not page and a busy hour with many does.
resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.name}-api-5xx-rate"
  alarm_description   = "More than ${var.max_5xx_percent}% of API requests answered 5xx (registration availability)"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.max_5xx_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching" # no requests, no errors
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "registration-availability" }
  metric_query {
    id          = "rate"
    expression  = "100 * errors / MAX([requests, 1])"
    label       = "5xx %"
    return_data = true
  }
  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/ApiGateway"
      metric_name = "5xx"
      dimensions  = { ApiId = var.api_id }
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApiGateway"
      metric_name = "Count"
      dimensions  = { ApiId = var.api_id }
      period      = 60
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "api_p99" {
  alarm_name          = "${var.name}-api-latency-p99"
  alarm_description   = "p99 latency of the API above ${var.p99_latency_ms} ms (registration latency)"
  namespace           = "AWS/ApiGateway"
  metric_name         = "Latency"
  dimensions          = { ApiId = var.api_id }
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.p99_latency_ms
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "registration-latency" }
}

resource "aws_cloudwatch_metric_alarm" "consumer_lag" {
  for_each            = toset(var.consumers)
  alarm_name          = "${var.name}-lag-${each.value}"
  alarm_description   = "The oldest event pending for ${each.value} is older than ${var.max_lag_seconds} s (invoices registered but not yet charged or certified)"
  namespace           = "BMC/Streams"
  metric_name         = "ConsumerLagSeconds"
  dimensions          = { Consumer = split("-from-", each.value)[0], Source = split("-from-", each.value)[1] }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.max_lag_seconds
  treat_missing_data  = "breaching" # a consumer that stopped reporting is not a healthy one
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "certification-lag" }
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name}-dead-letters"
  alarm_description   = "Events were set aside as dead letters: re-drive them (`bmc events dead-letters`)"
  namespace           = "BMC/Streams"
  metric_name         = "DeadLetters"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching" # none set aside
  alarm_actions       = local.actions
  tags                = { slo = "no-event-lost" }
}

resource "aws_cloudwatch_metric_alarm" "outbox_growing" {
  alarm_name          = "${var.name}-outbox-growing"
  alarm_description   = "An event has waited more than ${var.max_outbox_seconds} s to leave its service's outbox"
  namespace           = "BMC/Streams"
  metric_name         = "OutboxOldestUnpublishedSeconds"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.max_outbox_seconds
  treat_missing_data  = "breaching" # a relay that stopped reporting publishes nothing either
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "no-event-lost" }
}

resource "aws_cloudwatch_metric_alarm" "cache_hit_ratio" {
  alarm_name          = "${var.name}-catalog-cache-hit-ratio"
  alarm_description   = "Fewer than ${var.min_cache_hit_percent}% of product lookups answered by the cache"
  comparison_operator = "LessThanThreshold"
  threshold           = var.min_cache_hit_percent
  evaluation_periods  = 15
  datapoints_to_alarm = 15
  treat_missing_data  = "notBreaching" # no lookups
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "catalog-cache" }
  metric_query {
    id          = "ratio"
    expression  = "100 * hits / MAX([lookups, 1])"
    label       = "cache hit %"
    return_data = true
  }
  metric_query {
    id = "hits"
    metric {
      namespace   = "BMC/Catalog"
      metric_name = "CacheHits"
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "lookups"
    metric {
      namespace   = "BMC/Catalog"
      metric_name = "CacheLookups"
      period      = 60
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "mesh_ejections" {
  alarm_name          = "${var.name}-mesh-ejections"
  alarm_description   = "An Envoy sidecar has ejected upstream hosts (outlier detection)"
  namespace           = "BMC/Mesh"
  metric_name         = "EjectionsActive"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "mesh-health" }
}

resource "aws_cloudwatch_metric_alarm" "mesh_tls_failures" {
  alarm_name          = "${var.name}-mesh-tls-failures"
  alarm_description   = "Envoy sidecars fail TLS handshakes: a certificate expired or an identity is wrong"
  namespace           = "BMC/Mesh"
  metric_name         = "SslConnectionErrors"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = { slo = "mesh-health" }
}

resource "aws_cloudwatch_metric_alarm" "database_cpu" {
  alarm_name          = "${var.name}-database-cpu"
  alarm_description   = "PostgreSQL CPU above 80% for 15 minutes"
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = var.database_id }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 80
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "database_storage" {
  alarm_name          = "${var.name}-database-free-storage"
  alarm_description   = "PostgreSQL free storage below ${var.min_free_storage_gb} GB (storage autoscaling has a ceiling)"
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = var.database_id }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = var.min_free_storage_gb * 1024 * 1024 * 1024
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "redis_memory" {
  alarm_name          = "${var.name}-redis-memory"
  alarm_description   = "Redis memory above 80%: the streams' backlog or the catalog cache is outgrowing the nodes"
  namespace           = "AWS/ElastiCache"
  metric_name         = "DatabaseMemoryUsagePercentage"
  dimensions          = { ReplicationGroupId = var.redis_id }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 80
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

# The operators' status page in AWS, for those without a terminal (`bmc
# status` reads a Prometheus, which only `bmc up --observe` runs): every
# alarm's state, then the figures the objectives are judged on.
resource "aws_cloudwatch_dashboard" "status" {
  dashboard_name = "${var.name}-status"
  dashboard_body = jsonencode({
    widgets = concat(
      [{
        type       = "alarm", x = 0, y = 0, width = 24, height = 4
        properties = { title = "Objectives", alarms = [for alarm in local.alarms : alarm.arn] }
      }],
      [for i, graph in local.graphs : {
        type       = "metric", x = (i % 3) * 8, y = 4 + floor(i / 3) * 6, width = 8, height = 6
        properties = merge({ region = data.aws_region.current.name, view = "timeSeries", period = 60 }, graph)
      }],
    )
  })
}

data "aws_region" "current" {}

locals {
  alarms = concat(
    [aws_cloudwatch_metric_alarm.api_5xx, aws_cloudwatch_metric_alarm.api_p99],
    values(aws_cloudwatch_metric_alarm.consumer_lag),
    [aws_cloudwatch_metric_alarm.dead_letters, aws_cloudwatch_metric_alarm.outbox_growing],
    [aws_cloudwatch_metric_alarm.cache_hit_ratio],
    [aws_cloudwatch_metric_alarm.mesh_ejections, aws_cloudwatch_metric_alarm.mesh_tls_failures],
    [aws_cloudwatch_metric_alarm.database_cpu, aws_cloudwatch_metric_alarm.database_storage, aws_cloudwatch_metric_alarm.redis_memory],
  )
  graphs = [
    { title = "API requests and 5xx", stat = "Sum", metrics = [
      ["AWS/ApiGateway", "Count", "ApiId", var.api_id], [".", "5xx", ".", "."],
    ] },
    { title = "API latency p99 (ms)", stat = "p99", metrics = [["AWS/ApiGateway", "Latency", "ApiId", var.api_id]] },
    { title = "Oldest event pending per consumer (s)", stat = "Maximum", metrics = [
      for c in var.consumers : ["BMC/Streams", "ConsumerLagSeconds", "Consumer", split("-from-", c)[0], "Source", split("-from-", c)[1]]
    ] },
    { title = "Outbox: oldest unpublished (s); dead letters", stat = "Maximum", metrics = [
      ["BMC/Streams", "OutboxOldestUnpublishedSeconds"], [".", "DeadLetters", { stat = "Sum" }],
    ] },
    { title = "Catalog cache: hits of lookups", stat = "Sum", metrics = [
      ["BMC/Catalog", "CacheHits"], [".", "CacheLookups"],
    ] },
    { title = "Mesh: hosts ejected, TLS failures", stat = "Maximum", metrics = [
      ["BMC/Mesh", "EjectionsActive"], [".", "SslConnectionErrors", { stat = "Sum" }],
    ] },
  ]
}
