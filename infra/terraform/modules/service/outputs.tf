output "security_group_id" {
  value = aws_security_group.service.id
}

output "task_role_arn" {
  value = aws_iam_role.task.arn
}

output "container_definitions" {
  value = aws_ecs_task_definition.service.container_definitions
}
