output "gatherer_files" {
  description = "Per gatherer (gatherer-1..N order): {absolute path on the host => content}."
  value       = local.gatherer_files
}

output "deduplicator_files" {
  description = "{absolute path on the deduplicator host => content}."
  value       = local.deduplicator_files
}

output "gatherer_user_data" {
  description = "Per gatherer: the #cloud-config user data that writes gatherer_files and runs the bootstrap."
  value = [for i, files in local.gatherer_files : templatefile("${path.module}/templates/cloud-config.yaml.tftpl", {
    role     = local.gatherer_ids[i]
    packages = local.gatherer_packages
    files    = files
  })]
}

output "deduplicator_user_data" {
  description = "The deduplicator's #cloud-config user data."
  value = templatefile("${path.module}/templates/cloud-config.yaml.tftpl", {
    role     = "deduplicator"
    packages = local.deduplicator_packages
    files    = local.deduplicator_files
  })
}

output "secret_names" {
  description = "Secrets Manager names the rendered files refer to, by short name."
  value       = local.secret_names
}
