output "function_app_name" {
  description = "Function App name (for az functionapp deployment source config-zip)."
  value       = azapi_resource.function_app.name
}

output "function_app_principal_id" {
  description = "Object id of the Function App's system-assigned identity."
  value       = local.app_principal_id
}

output "lake_url" {
  description = "The lake URL the app writes to (XDR_LAKE)."
  value       = local.lake_url
}

output "event_hub_namespace_resource_id" {
  description = "Event Hubs namespace resource id: what the Defender portal asks for as \"Event Hub Resource ID\"."
  value       = local.namespace_id
}

output "event_hub_name" {
  description = "Event hub name to enter in the Defender portal."
  value       = var.event_hub_name
}

output "defender_storage_account_resource_id" {
  description = "Export storage account resource id: what the Defender portal asks for as \"Storage Account Resource ID\"."
  value       = data.azurerm_storage_account.export.id
}

output "application_insights_name" {
  description = "Application Insights resource name (traces, failures, the alerts)."
  value       = azurerm_application_insights.this.name
}
