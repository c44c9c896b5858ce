output "topic_arn" {
  value = aws_sns_topic.alarms.arn
}

output "alarm_names" {
  value = [for alarm in local.alarms : alarm.alarm_name]
}

output "dashboard_name" {
  value = aws_cloudwatch_dashboard.status.dashboard_name
}
