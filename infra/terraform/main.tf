# Names and derived values (the twin of the "Names and derived values" section of main.bicep).

data "azurerm_resource_group" "this" {
  name = var.resource_group_name
}

data "azurerm_subscription" "current" {}

locals {
  location = coalesce(var.location, data.azurerm_resource_group.this.location)
  suffix   = coalesce(var.name_suffix, substr(sha1(data.azurerm_resource_group.this.id), 0, 8))

  lake_account_name     = "${var.name_prefix}lake${local.suffix}"
  host_account_name     = "${var.name_prefix}host${local.suffix}"
  plan_name             = "${var.name_prefix}-plan-${local.suffix}"
  function_app_name     = "${var.name_prefix}-ingest-${local.suffix}"
  workspace_name        = "${var.name_prefix}-logs-${local.suffix}"
  app_insights_name     = "${var.name_prefix}-ai-${local.suffix}"
  action_group_name     = "${var.name_prefix}-alerts-${local.suffix}"
  namespace_name        = coalesce(var.event_hub_namespace_name, "${var.name_prefix}-eh-${local.suffix}")
  event_hub_rg          = coalesce(var.event_hub_resource_group_name, data.azurerm_resource_group.this.name)
  export_rg             = coalesce(var.defender_storage_resource_group_name, data.azurerm_resource_group.this.name)
  system_topic_name     = coalesce(var.event_grid_system_topic_name, "${var.name_prefix}-defender-export-${local.suffix}")
  diagnostic_setting    = "${var.name_prefix}-xdr-ingest-${local.suffix}"
  poison_queue_name     = "${var.work_queue_name}-poison"
  queue_names           = [var.work_queue_name, local.poison_queue_name]
  lake_url              = "abfss://${var.lake_container_name}@${local.lake_account_name}.dfs.${var.storage_endpoint_suffix}/${var.lake_path}"
  default_replay_list   = [for c in var.defender_containers : "${var.defender_storage_account_name}/${c}"]
  effective_replay_list = coalescelist(var.replay_allowlist, local.default_replay_list)

  # Built-in role definitions (ids are the same in every tenant).
  roles = {
    storage_blob_data_owner           = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    storage_blob_data_contributor     = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    storage_blob_data_reader          = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    storage_queue_data_contributor    = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
    storage_queue_data_message_sender = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
    storage_table_data_contributor    = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    event_hubs_data_receiver          = "a638d3c7-ab3a-418d-83e6-5f17a39d4fde"
    monitoring_metrics_publisher      = "3913510d-42f4-4e42-8a64-420c390055eb"
  }
  role_definition_prefix = "${data.azurerm_subscription.current.id}/providers/Microsoft.Authorization/roleDefinitions/"

  # Identity-based AzureWebJobsStorage needs blob (owner: leases, deployment package), queue and
  # table access on the host account.
  host_storage_roles = {
    blob_owner        = local.roles.storage_blob_data_owner
    queue_contributor = local.roles.storage_queue_data_contributor
    table_contributor = local.roles.storage_table_data_contributor
  }

  app_principal_id = azapi_resource.function_app.identity[0].principal_id
}
