# Function App on Flex Consumption (Linux, runtime "custom") and its roles in this resource group.

resource "azurerm_service_plan" "flex" {
  #checkov:skip=CKV_AZURE_225:Flex Consumption plan; zone redundancy is region-dependent and not enabled by this template.
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero and out per trigger; there is no fixed instance count.
  #checkov:skip=CKV_AZURE_211:FC1 is the only Flex Consumption SKU.
  name                = local.plan_name
  resource_group_name = data.azurerm_resource_group.this.name
  location            = local.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = var.tags
}

# azapi rather than azurerm_function_app_flex_consumption: see versions.tf. The body is the
# Microsoft.Web/sites resource of main.bicep.
resource "azapi_resource" "function_app" {
  type      = "Microsoft.Web/sites@2024-04-01"
  name      = local.function_app_name
  parent_id = data.azurerm_resource_group.this.id
  location  = local.location
  tags      = var.tags

  identity {
    type = "SystemAssigned"
  }

  body = {
    kind = "functionapp,linux"
    properties = {
      serverFarmId        = azurerm_service_plan.flex.id
      httpsOnly           = true
      publicNetworkAccess = "Enabled"
      siteConfig = {
        minTlsVersion = "1.2"
        http20Enabled = true
        # Names are fixed by the handler and its function.json files. No FUNCTIONS_WORKER_RUNTIME:
        # Flex Consumption takes the runtime from functionAppConfig.runtime instead.
        appSettings = [
          {
            name  = "AzureWebJobsStorage__accountName"
            value = azurerm_storage_account.host.name
          },
          {
            name  = "AzureWebJobsStorage__credential"
            value = "managedidentity"
          },
          {
            name  = "APPLICATIONINSIGHTS_CONNECTION_STRING"
            value = azurerm_application_insights.this.connection_string
          },
          {
            name  = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
            value = "Authorization=AAD"
          },
          {
            name  = "XDR_LAKE"
            value = local.lake_url
          },
          {
            name  = "XDR_DEFENDER_STORAGE_ACCOUNT"
            value = var.defender_storage_account_name
          },
          {
            name  = "XDR_DEFENDER_CONTAINERS"
            value = join(",", var.defender_containers)
          },
          {
            name  = "XDR_WORK_QUEUE"
            value = var.work_queue_name
          },
          {
            name  = "XdrQueue__queueServiceUri"
            value = "https://${var.defender_storage_account_name}.queue.${var.storage_endpoint_suffix}"
          },
          {
            name  = "XdrQueue__credential"
            value = "managedidentity"
          },
          {
            name  = "XDR_STORAGE_ENDPOINT_SUFFIX"
            value = var.storage_endpoint_suffix
          },
          {
            name  = "XDR_REPLAY_ALLOWLIST"
            value = join(",", local.effective_replay_list)
          },
          {
            name  = "DefenderEventHub__fullyQualifiedNamespace"
            value = "${local.namespace_name}.servicebus.windows.net"
          },
          {
            name  = "DefenderEventHub__credential"
            value = "managedidentity"
          },
          {
            name  = "DEFENDER_EVENTHUB_NAME"
            value = var.event_hub_name
          },
          {
            name  = "DEFENDER_CONSUMER_GROUP"
            value = var.consumer_group_name
          },
        ]
      }
      functionAppConfig = {
        deployment = {
          storage = {
            type  = "blobContainer"
            value = "${azurerm_storage_account.host.primary_blob_endpoint}${var.deployment_container_name}"
            authentication = {
              type = "SystemAssignedIdentity"
            }
          }
        }
        scaleAndConcurrency = {
          maximumInstanceCount = var.maximum_instance_count
          instanceMemoryMB     = var.instance_memory_mb
        }
        runtime = {
          name    = "custom"
          version = "1.0"
        }
      }
    }
  }

  response_export_values = ["properties.defaultHostName"]

  depends_on = [azurerm_storage_container.deployment]
}

resource "azurerm_role_assignment" "host_storage" {
  for_each           = local.host_storage_roles
  scope              = azurerm_storage_account.host.id
  role_definition_id = "${local.role_definition_prefix}${each.value}"
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# Lake: Blob Data Contributor on the lake CONTAINER only (not the account).
resource "azurerm_role_assignment" "lake_container" {
  scope              = azurerm_storage_container.lake.id
  role_definition_id = "${local.role_definition_prefix}${local.roles.storage_blob_data_contributor}"
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# Application Insights with local auth disabled accepts telemetry only from identities with this role.
resource "azurerm_role_assignment" "app_insights" {
  scope              = azurerm_application_insights.this.id
  role_definition_id = "${local.role_definition_prefix}${local.roles.monitoring_metrics_publisher}"
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}
