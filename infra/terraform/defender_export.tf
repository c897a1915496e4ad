# Blob path, on the EXISTING storage account that Defender's Streaming API exports to: the work
# queue and its poison queue, an Event Grid system topic (created, or the account's existing one)
# whose BlobCreated events for the Defender containers' .json blobs go to the work queue
# (delivered with the topic's own identity), queue write logs for the poison alert, and the app's
# roles on the account (read blobs) and on the two queues. The twin of modules/defender-export.bicep.

data "azurerm_storage_account" "export" {
  name                = var.defender_storage_account_name
  resource_group_name = local.export_rg
}

resource "azurerm_storage_queue" "work" {
  for_each           = toset(local.queue_names)
  name               = each.value
  storage_account_id = data.azurerm_storage_account.export.id
  metadata = {
    purpose = "xdr-ingest"
  }
}

locals {
  # An account can have only one system topic: reuse the one named, or create one.
  create_system_topic = contains([""], var.existing_event_grid_system_topic_name)
}

resource "azurerm_eventgrid_system_topic" "export" {
  count               = local.create_system_topic ? 1 : 0
  name                = local.system_topic_name
  resource_group_name = local.export_rg
  location            = data.azurerm_storage_account.export.location
  source_resource_id  = data.azurerm_storage_account.export.id
  topic_type          = "Microsoft.Storage.StorageAccounts"
  tags                = var.tags

  identity {
    type = "SystemAssigned"
  }
}

# The topic was created without count before existing_event_grid_system_topic_name existed.
moved {
  from = azurerm_eventgrid_system_topic.export
  to   = azurerm_eventgrid_system_topic.export[0]
}

data "azurerm_eventgrid_system_topic" "existing" {
  count               = local.create_system_topic ? 0 : 1
  name                = var.existing_event_grid_system_topic_name
  resource_group_name = local.export_rg

  lifecycle {
    postcondition {
      condition     = contains([lower(data.azurerm_storage_account.export.id)], lower(self.source_resource_id))
      error_message = "existing_event_grid_system_topic_name: this system topic's source is not the export account (defender_storage_account_name)."
    }
    postcondition {
      condition     = anytrue([for i in self.identity : strcontains(i.type, "SystemAssigned")])
      error_message = "existing_event_grid_system_topic_name: the topic has no system-assigned identity, which delivers the events to the work queue. Add one: az eventgrid system-topic update -g <rg> -n <topic> --identity systemassigned."
    }
  }
}

locals {
  # The topic the subscription goes to, and its system-assigned identity: created above or reused.
  # Exactly one of the two lists has an element.
  topic_name = one(concat(azurerm_eventgrid_system_topic.export[*].name, data.azurerm_eventgrid_system_topic.existing[*].name))
  topic_principal_id = one(concat(
    [for t in azurerm_eventgrid_system_topic.export : t.identity[0].principal_id],
    flatten([for t in data.azurerm_eventgrid_system_topic.existing : [for i in t.identity : i.principal_id if strcontains(i.type, "SystemAssigned")]]),
  ))
}

# The topic's identity may only add messages to the work queue.
resource "azurerm_role_assignment" "topic_queue_sender" {
  scope              = azurerm_storage_queue.work[var.work_queue_name].id
  role_definition_id = "${local.role_definition_prefix}${local.roles.storage_queue_data_message_sender}"
  principal_id       = local.topic_principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_eventgrid_system_topic_event_subscription" "blob_created" {
  name                  = "xdr-ingest-blob-created"
  system_topic          = local.topic_name
  resource_group_name   = local.export_rg
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/insights-logs-advancedhunting-"
    subject_ends_with   = ".json"
    case_sensitive      = false
  }

  delivery_identity {
    type = "SystemAssigned"
  }

  storage_queue_endpoint {
    storage_account_id = data.azurerm_storage_account.export.id
    queue_name         = var.work_queue_name
    # -1: messages never expire (written without an operator, see versions.tf).
    queue_message_time_to_live_in_seconds = tonumber("-1")
  }

  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }

  depends_on = [azurerm_role_assignment.topic_queue_sender, azurerm_storage_queue.work]
}

# The app reads (and lists) the Defender blobs...
resource "azurerm_role_assignment" "export_blob_reader" {
  scope              = data.azurerm_storage_account.export.id
  role_definition_id = "${local.role_definition_prefix}${local.roles.storage_blob_data_reader}"
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# ...and reads/writes messages of the work queue and its poison queue (queue scope only).
resource "azurerm_role_assignment" "work_queues" {
  for_each           = azurerm_storage_queue.work
  scope              = each.value.id
  role_definition_id = "${local.role_definition_prefix}${local.roles.storage_queue_data_contributor}"
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# Queue write operations (PutMessage on the poison queue) into the workspace.
resource "azurerm_monitor_diagnostic_setting" "export_queue_writes" {
  name                       = local.diagnostic_setting
  target_resource_id         = "${data.azurerm_storage_account.export.id}/queueServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "StorageWrite"
  }
}
