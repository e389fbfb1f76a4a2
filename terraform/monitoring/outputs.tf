output "files" {
  description = "Absolute path on the monitoring host -> content (uploaded to the config bucket under the same key, without the leading slash)."
  value       = local.files
}

output "cloud_config" {
  description = "The monitoring host's user data (cloud-config; installs packages and runs the bootstrap)."
  value       = local.cloud_config
}

output "targets" {
  description = "The Prometheus file_sd target groups by job name."
  value       = local.targets
}
