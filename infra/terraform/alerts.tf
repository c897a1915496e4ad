# Alerts: an action group (email), invocation failures, dead letters, closed blobs behind their
# watermark, Event Hubs consumer lag, poison-queue messages. The KQL below is the same text as in
# main.bicep (the validator compares).

resource "azurerm_monitor_action_group" "this" {
  name                = local.action_group_name
  resource_group_name = data.azurerm_resource_group.this.name
  short_name          = "xdr-ingest"
  tags                = var.tags

  email_receiver {
    name                    = "operator"
    email_address           = var.alert_email
    use_common_alert_schema = true
  }
}

# Any failed invocation. Event Hub batches retry forever (function.json), so failures that
# persist also mean a partition is stuck.
resource "azurerm_monitor_metric_alert" "invocation_failures" {
  name                = "${var.name_prefix}-invocation-failures-${local.suffix}"
  resource_group_name = data.azurerm_resource_group.this.name
  scopes              = [azurerm_application_insights.this.id]
  description         = "xdr-ingest: function invocations failed (Application Insights requests/failed > 0 in 15 minutes)."
  severity            = 1
  enabled             = true
  frequency           = "PT5M"
  window_size         = "PT15M"
  tags                = var.tags

  criteria {
    metric_namespace = "microsoft.insights/components"
    metric_name      = "requests/failed"
    aggregation      = "Count"
    operator         = "GreaterThan"
    threshold        = 0
  }

  action {
    action_group_id = azurerm_monitor_action_group.this.id
  }
}

locals {
  # Dead letters: the handler logs one JSON line per invocation with "records", "typed_rows" and
  # "dead_letters" (stdout, captured by the host as an Information trace); this matches lines whose
  # "dead_letters" is above zero.
  dead_letter_query = <<-KQL
    traces
    | where message has "dead_letters"
    | extend dead_letters = toint(extract('"dead_letters": *([0-9]+)', 1, message))
    | where dead_letters > 0
    | project timestamp, dead_letters, message
  KQL

  # Closed blobs behind their watermark: BlobSweep logs one JSON line per sweep with "enqueued",
  # "closed_behind", "catch_up_hours_left" and "hours_listed" (stdout, captured by the host as an
  # Information trace); this matches lines whose "closed_behind" is above zero.
  closed_behind_query = <<-KQL
    traces
    | where message has "closed_behind"
    | extend closed_behind = toint(extract('"closed_behind": *([0-9]+)', 1, message))
    | where closed_behind > 0
    | project timestamp, closed_behind, message
  KQL

  # Consumer lag: Event Hubs has no per-consumer-group lag metric; the namespace's
  # IncomingMessages minus OutgoingMessages (exported to the workspace by the diagnostic setting
  # in eventhub.tf) is the backlog growth. Other readers of the namespace add to
  # OutgoingMessages, so this can miss lag but does not invent it.
  lag_query = <<-KQL
    AzureMetrics
    | where ResourceProvider == "MICROSOFT.EVENTHUB" and Resource =~ "${local.namespace_name}"
    | where MetricName in ("IncomingMessages", "OutgoingMessages")
    | summarize incoming = sumif(Total, MetricName == "IncomingMessages"), outgoing = sumif(Total, MetricName == "OutgoingMessages") by bin(TimeGenerated, 5m)
    | extend backlog_growth = incoming - outgoing
  KQL

  # Poison queue: the queue trigger moves a work item to <queue>-poison after maxDequeueCount
  # failures (host.json). StorageQueueLogs (diagnostic setting in defender_export.tf) shows every
  # PutMessage on it.
  poison_query = <<-KQL
    StorageQueueLogs
    | where AccountName =~ "${var.defender_storage_account_name}" and OperationName == "PutMessage"
    | where Uri contains "/${local.poison_queue_name}/messages"
    | project TimeGenerated, Uri
  KQL
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "dead_letters" {
  name                 = "${var.name_prefix}-dead-letters-${local.suffix}"
  display_name         = "${var.name_prefix}-dead-letters-${local.suffix}"
  resource_group_name  = data.azurerm_resource_group.this.name
  location             = local.location
  description          = "xdr-ingest: records went to the _dead_letters table (an invocation summary with dead_letters > 0)."
  severity             = 2
  enabled              = true
  scopes               = [azurerm_application_insights.this.id]
  evaluation_frequency = "PT15M"
  window_duration      = "PT15M"
  tags                 = var.tags

  criteria {
    query                   = local.dead_letter_query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      number_of_evaluation_periods             = 1
      minimum_failing_periods_to_trigger_alert = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.this.id]
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "closed_behind" {
  name                 = "${var.name_prefix}-closed-behind-${local.suffix}"
  display_name         = "${var.name_prefix}-closed-behind-${local.suffix}"
  resource_group_name  = data.azurerm_resource_group.this.name
  location             = local.location
  description          = "xdr-ingest: closed Defender export blobs are not fully read (BlobSweep closed_behind > 0): an outage is being caught up, or BlobIngest keeps failing (see the poison queue)."
  severity             = 2
  enabled              = true
  scopes               = [azurerm_application_insights.this.id]
  evaluation_frequency = "PT15M"
  window_duration      = "PT15M"
  tags                 = var.tags

  criteria {
    query                   = local.closed_behind_query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      number_of_evaluation_periods             = 1
      minimum_failing_periods_to_trigger_alert = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.this.id]
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "event_hub_lag" {
  name                 = "${var.name_prefix}-eventhub-lag-${local.suffix}"
  display_name         = "${var.name_prefix}-eventhub-lag-${local.suffix}"
  resource_group_name  = data.azurerm_resource_group.this.name
  location             = local.location
  description          = "xdr-ingest: Event Hubs backlog grew (incoming minus outgoing messages over one hour above event_hub_lag_threshold)."
  severity             = 2
  enabled              = true
  scopes               = [azurerm_log_analytics_workspace.this.id]
  evaluation_frequency = "PT15M"
  window_duration      = "PT1H"
  tags                 = var.tags

  criteria {
    query                   = local.lag_query
    time_aggregation_method = "Total"
    metric_measure_column   = "backlog_growth"
    operator                = "GreaterThan"
    threshold               = var.event_hub_lag_threshold

    failing_periods {
      number_of_evaluation_periods             = 1
      minimum_failing_periods_to_trigger_alert = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.this.id]
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "poison_queue" {
  name                 = "${var.name_prefix}-poison-queue-${local.suffix}"
  display_name         = "${var.name_prefix}-poison-queue-${local.suffix}"
  resource_group_name  = data.azurerm_resource_group.this.name
  location             = local.location
  description          = "xdr-ingest: blob work items landed in the poison queue (blob ingestion failed maxDequeueCount times)."
  severity             = 1
  enabled              = true
  scopes               = [azurerm_log_analytics_workspace.this.id]
  evaluation_frequency = "PT15M"
  window_duration      = "PT15M"
  tags                 = var.tags

  criteria {
    query                   = local.poison_query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      number_of_evaluation_periods             = 1
      minimum_failing_periods_to_trigger_alert = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.this.id]
  }
}
