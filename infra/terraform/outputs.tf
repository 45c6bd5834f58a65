output "store_url" {
  description = "The MLC_FARM_STORE value for workers and users."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}/${var.prefix}"
}

output "workers_policy_arn" {
  description = "Attach to the workers' role (read-write)."
  value       = aws_iam_policy.workers.arn
}

output "downloaders_policy_arn" {
  description = "Attach to the users who download artifacts (read-only)."
  value       = aws_iam_policy.downloaders.arn
}
