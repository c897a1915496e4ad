# Parameters. Each one is the snake_case twin of a parameter of infra/bicep/main.bicep, except
# resource_group_name (Bicep: the deployment's --resource-group).

variable "resource_group_name" {
  description = "Existing resource group to deploy into (Bicep: the --resource-group of az deployment group create)."
  type        = string
}

variable "location" {
  description = "Azure region of the new resources (Function App, lake, host storage, monitoring, a new Event Hubs namespace). Empty: the resource group's region. The Event Grid system topic always goes to the export account's region."
  type        = string
  default     = ""
}

variable "name_prefix" {
  description = "2-8 lowercase letters and digits, starting with a letter, that start every resource name."
  type        = string
  default     = "xdr"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,7}$", var.name_prefix))
    error_message = "name_prefix: 2-8 lowercase letters and digits, starting with a letter."
  }
}

variable "name_suffix" {
  description = "Lowercase letters and digits (up to 8) that make global names unique. Empty: derived from the resource group id (Bicep: uniqueString, Terraform: sha1), so the two tools name things differently unless you set it."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[a-z0-9]{0,8}$", var.name_suffix))
    error_message = "name_suffix: at most 8 lowercase letters and digits."
  }
}

variable "tags" {
  description = "Tags applied to every resource this deployment creates."
  type        = map(string)
  default     = {}
}

variable "storage_replication" {
  description = "Replication of the two storage accounts created here (lake and Functions host storage). ZRS keeps the lake available through a zone outage; use LRS where ZRS is not offered."
  type        = string
  default     = "ZRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "GZRS", "RAGRS", "RAGZRS"], var.storage_replication)
    error_message = "storage_replication: one of LRS, ZRS, GRS, GZRS, RAGRS, RAGZRS."
  }
}

variable "lake_container_name" {
  description = "Container of the lake storage account (ADLS Gen2) that holds the Delta tables."
  type        = string
  default     = "lake"
}

variable "lake_path" {
  description = "Folder inside the lake container under which the Delta tables are created (XDR_LAKE = abfss://<container>@<account>.dfs.<storage_endpoint_suffix>/<path>)."
  type        = string
  default     = "defender"
}

variable "storage_endpoint_suffix" {
  description = "Storage endpoint suffix of the Azure cloud (XDR_STORAGE_ENDPOINT_SUFFIX; also builds XDR_LAKE and the work queue's service URI): core.windows.net (public cloud), core.chinacloudapi.cn (Azure China), core.usgovcloudapi.net (Azure Government). Bicep takes it from environment().suffixes.storage."
  type        = string
  default     = "core.windows.net"

  validation {
    condition     = can(regex("^[a-z0-9-]+(\\.[a-z0-9-]+)+$", var.storage_endpoint_suffix))
    error_message = "storage_endpoint_suffix: a DNS suffix without a leading dot, such as core.windows.net."
  }
}

variable "deployment_container_name" {
  description = "Blob container in the host storage account that Flex Consumption deploys the app package (the zip of scripts/package.sh) from."
  type        = string
  default     = "app-package"
}

variable "instance_memory_mb" {
  description = "Flex Consumption instance memory in MB."
  type        = number
  default     = 2048

  validation {
    condition     = contains([512, 2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb: 512, 2048 or 4096."
  }
}

variable "maximum_instance_count" {
  description = "Flex Consumption maximum number of instances the app scales out to (40-1000)."
  type        = number
  default     = 40

  validation {
    condition     = contains(range(40, 1001), var.maximum_instance_count)
    error_message = "maximum_instance_count: 40-1000."
  }
}

variable "log_retention_days" {
  description = "Retention in days of the Log Analytics workspace behind Application Insights."
  type        = number
  default     = 30

  validation {
    condition     = contains(range(30, 731), var.log_retention_days)
    error_message = "log_retention_days: 30-730."
  }
}

variable "defender_storage_account_name" {
  description = "Name of the EXISTING storage account that Defender's Streaming API exports to (one container per table). It is not modified, except for: two queues, an Event Grid system topic (or a subscription on its existing one), a diagnostic setting on its queue service, and role assignments."
  type        = string
}

variable "defender_storage_resource_group_name" {
  description = "Resource group of the Defender export storage account. Empty: the deployment's resource group."
  type        = string
  default     = ""
}

variable "defender_containers" {
  description = "Defender export containers the app reads (XDR_DEFENDER_CONTAINERS). Default: all 26 advanced-hunting tables (registry/tables.json, field \"container\")."
  type        = list(string)
  default = [
    "insights-logs-advancedhunting-alertevidence",
    "insights-logs-advancedhunting-alertinfo",
    "insights-logs-advancedhunting-behaviorentities",
    "insights-logs-advancedhunting-behaviorinfo",
    "insights-logs-advancedhunting-cloudappevents",
    "insights-logs-advancedhunting-deviceevents",
    "insights-logs-advancedhunting-devicefilecertificateinfo",
    "insights-logs-advancedhunting-devicefileevents",
    "insights-logs-advancedhunting-deviceimageloadevents",
    "insights-logs-advancedhunting-deviceinfo",
    "insights-logs-advancedhunting-devicelogonevents",
    "insights-logs-advancedhunting-devicenetworkevents",
    "insights-logs-advancedhunting-devicenetworkinfo",
    "insights-logs-advancedhunting-deviceprocessevents",
    "insights-logs-advancedhunting-deviceregistryevents",
    "insights-logs-advancedhunting-emailattachmentinfo",
    "insights-logs-advancedhunting-emailevents",
    "insights-logs-advancedhunting-emailpostdeliveryevents",
    "insights-logs-advancedhunting-emailurlinfo",
    "insights-logs-advancedhunting-identitylogonevents",
    "insights-logs-advancedhunting-identityqueryevents",
    "insights-logs-advancedhunting-identitydirectoryevents",
    "insights-logs-advancedhunting-urlclickevents",
    "insights-logs-advancedhunting-identityinfo",
    "insights-logs-advancedhunting-messageevents",
    "insights-logs-advancedhunting-messageurlinfo",
  ]
}

variable "work_queue_name" {
  description = "Storage queue (on the export account) that Event Grid BlobCreated events and the sweep/replay work items go to (XDR_WORK_QUEUE). Its poison queue <name>-poison is created too."
  type        = string
  default     = "xdr-blob-work"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$", var.work_queue_name))
    error_message = "work_queue_name: 3-56 lowercase letters, digits and hyphens (the -poison queue must stay within 63)."
  }
}

variable "replay_allowlist" {
  description = "Replay allowlist entries <account>/<container> (<account>/* for all). Empty: the export account and each of defender_containers."
  type        = list(string)
  default     = []
}

variable "event_grid_system_topic_name" {
  description = "Name of the Event Grid system topic created on the export account (when existing_event_grid_system_topic_name is empty). Empty: <prefix>-defender-export-<suffix>. An account can have only one system topic: if it already has one, set existing_event_grid_system_topic_name instead."
  type        = string
  default     = ""
}

variable "existing_event_grid_system_topic_name" {
  description = "Name of the export account's EXISTING Event Grid system topic (in defender_storage_resource_group_name) to reuse; an account can have only one. Empty: create one (event_grid_system_topic_name). When set, only the event subscription and the topic identity's Storage Queue Data Message Sender role on the work queue are added. The topic must have a system-assigned identity (az eventgrid system-topic update --identity systemassigned): events are delivered with it, so without one the delivery cannot work and the plan stops with an error."
  type        = string
  default     = ""
}

variable "create_event_hub" {
  description = "true: create a Standard Event Hubs namespace and hub. false: use the existing event_hub_namespace_name / event_hub_name in event_hub_resource_group_name (only the consumer group, a diagnostic setting and the role assignment are added there)."
  type        = bool
  default     = true
}

variable "event_hub_namespace_name" {
  description = "Event Hubs namespace name. Required when create_event_hub is false; when creating, empty means <prefix>-eh-<suffix>."
  type        = string
  default     = ""

  validation {
    # Without operators (see versions.tf): coalesce() fails when both are empty.
    condition     = can(coalesce(var.event_hub_namespace_name, var.create_event_hub ? "generated" : ""))
    error_message = "event_hub_namespace_name is required when create_event_hub is false."
  }
}

variable "event_hub_resource_group_name" {
  description = "Resource group of the Event Hubs namespace. Empty: the deployment's resource group."
  type        = string
  default     = ""
}

variable "event_hub_name" {
  description = "Event hub that Defender streams to (DEFENDER_EVENTHUB_NAME). Give the same name in the Defender portal, otherwise Defender creates one hub per table."
  type        = string
  default     = "defender-xdr"
}

variable "event_hub_partition_count" {
  description = "Partition count of a new event hub (create_event_hub true); fixed after creation on Standard."
  type        = number
  default     = 4

  validation {
    condition     = contains(range(1, 33), var.event_hub_partition_count)
    error_message = "event_hub_partition_count: 1-32."
  }
}

variable "event_hub_retention_days" {
  description = "Message retention in days of a new event hub (Standard: 1-7). It is also how long the app can be down without losing events."
  type        = number
  default     = 7

  validation {
    condition     = contains(range(1, 8), var.event_hub_retention_days)
    error_message = "event_hub_retention_days: 1-7."
  }
}

variable "event_hub_capacity" {
  description = "Throughput units of a new Standard namespace (each: 1 MB/s or 1000 events/s in, 2 MB/s out)."
  type        = number
  default     = 1

  validation {
    condition     = contains(range(1, 41), var.event_hub_capacity)
    error_message = "event_hub_capacity: 1-40."
  }
}

variable "event_hub_local_auth_enabled" {
  description = "Local (SAS key) authentication on a NEW Event Hubs namespace (create_event_hub true; an existing namespace is not changed). false: Entra ID only. The app uses its managed identity, and Defender's Streaming API connects with the Event Hub resource id and the signed-in user's Entra identity, so no SAS key is needed."
  type        = bool
  default     = false
}

variable "consumer_group_name" {
  description = "Dedicated consumer group of this app on the event hub (DEFENDER_CONSUMER_GROUP). Created on new and existing hubs."
  type        = string
  default     = "xdr-ingest"
}

variable "alert_email" {
  description = "Email address the alerts are sent to (action group)."
  type        = string
}

variable "event_hub_lag_threshold" {
  description = "Consumer lag alert: fires when, over one hour, the namespace received this many more messages than were read from it (IncomingMessages minus OutgoingMessages)."
  type        = number
  default     = 10000

  validation {
    condition     = can(regex("^[1-9][0-9]*$", format("%d", var.event_hub_lag_threshold)))
    error_message = "event_hub_lag_threshold: a whole number, at least 1."
  }
}
