output "topic_arn" {
  value = aws_sns_topic.alarms.arn
}

output "alarm_names" {
  value = concat(
    [aws_cloudwatch_metric_alarm.api_5xx.alarm_name, aws_cloudwatch_metric_alarm.api_p99.alarm_name],
    [for alarm in aws_cloudwatch_metric_alarm.consumer_lag : alarm.alarm_name],
    [aws_cloudwatch_metric_alarm.dead_letters.alarm_name, aws_cloudwatch_metric_alarm.outbox_growing.alarm_name],
    [aws_cloudwatch_metric_alarm.cache_hit_ratio.alarm_name],
    [aws_cloudwatch_metric_alarm.mesh_ejections.alarm_name, aws_cloudwatch_metric_alarm.mesh_tls_failures.alarm_name],
    [aws_cloudwatch_metric_alarm.database_cpu.alarm_name, aws_cloudwatch_metric_alarm.database_storage.alarm_name, aws_cloudwatch_metric_alarm.redis_memory.alarm_name],
  )
}
