# Event Hubs: a new Standard namespace + hub, or an existing one; in both cases the app's
# dedicated consumer group, the Data Receiver role on the hub, and the namespace metrics sent to
# Log Analytics (for the consumer lag alert). The twin of modules/eventhub.bicep.

resource "azurerm_eventhub_namespace" "new" {
  #checkov:skip=CKV_AZURE_228:Zone redundancy is not configured by this template (Standard tier, region-dependent).
  count                         = var.create_event_hub ? 1 : 0
  name                          = local.namespace_name
  resource_group_name           = local.event_hub_rg
  location                      = local.location
  sku                           = "Standard"
  capacity                      = var.event_hub_capacity
  minimum_tls_version           = "1.2"
  public_network_access_enabled = true
  # Local (SAS) auth off by default: the app uses its managed identity, and Defender's Streaming
  # API connects with the Event Hub resource id and the user's Entra identity.
  local_authentication_enabled = var.event_hub_local_auth_enabled
  auto_inflate_enabled         = false
  tags                         = var.tags
}

resource "azurerm_eventhub" "new" {
  count             = var.create_event_hub ? 1 : 0
  name              = var.event_hub_name
  namespace_id      = azurerm_eventhub_namespace.new[0].id
  partition_count   = var.event_hub_partition_count
  message_retention = var.event_hub_retention_days
}

data "azurerm_eventhub_namespace" "existing" {
  count               = var.create_event_hub ? 0 : 1
  name                = local.namespace_name
  resource_group_name = local.event_hub_rg
}

data "azurerm_eventhub" "existing" {
  count               = var.create_event_hub ? 0 : 1
  name                = var.event_hub_name
  namespace_name      = local.namespace_name
  resource_group_name = local.event_hub_rg
}

locals {
  # Exactly one of the two lists has an element.
  namespace_id = one(concat(azurerm_eventhub_namespace.new[*].id, data.azurerm_eventhub_namespace.existing[*].id))
  event_hub_id = one(concat(azurerm_eventhub.new[*].id, data.azurerm_eventhub.existing[*].id))
}

resource "azurerm_eventhub_consumer_group" "app" {
  name                = var.consumer_group_name
  namespace_name      = local.namespace_name
  eventhub_name       = var.event_hub_name
  resource_group_name = local.event_hub_rg
  user_metadata       = "xdr-ingest Function App (EventHubIngest)"

  depends_on = [azurerm_eventhub.new]
}

# Receiver on the hub only, not the namespace.
resource "azurerm_role_assignment" "event_hub_receiver" {
  scope              = local.event_hub_id
  role_definition_id = "${local.role_definition_prefix}${local.roles.event_hubs_data_receiver}"
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_monitor_diagnostic_setting" "event_hub_metrics" {
  name                       = local.diagnostic_setting
  target_resource_id         = local.namespace_id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_metric {
    category = "AllMetrics"
  }
}
