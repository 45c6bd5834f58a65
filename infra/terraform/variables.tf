variable "region" {
  type        = string
  description = "AWS region of the bucket."
  default     = "us-east-1"
}

variable "bucket" {
  type        = string
  description = "Name of the artifact bucket (MLC_FARM_STORE=s3://<bucket>/<prefix>)."
}

variable "prefix" {
  type        = string
  description = "Prefix of the store inside the bucket."
  default     = "artifacts"
}

variable "abort_multipart_after_days" {
  type        = number
  description = "Abort multipart uploads left unfinished this many days (killed builds)."
  default     = 2
}

variable "noncurrent_version_days" {
  type        = number
  description = "Keep overwritten catalog entries and records this many days."
  default     = 30
}
