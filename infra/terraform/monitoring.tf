# Log Analytics + Application Insights (Entra-only ingestion: local auth disabled).

resource "azurerm_log_analytics_workspace" "this" {
  name                = local.workspace_name
  resource_group_name = data.azurerm_resource_group.this.name
  location            = local.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_application_insights" "this" {
  name                         = local.app_insights_name
  resource_group_name          = data.azurerm_resource_group.this.name
  location                     = local.location
  application_type             = "web"
  workspace_id                 = azurerm_log_analytics_workspace.this.id
  local_authentication_enabled = false
  tags                         = var.tags
}
