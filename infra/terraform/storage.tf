# Storage: the lake (ADLS Gen2) and the Functions host storage. Shared-key access is off on both.

resource "azurerm_storage_account" "lake" {
  #checkov:skip=CKV_AZURE_43:The name is prefix+kind+suffix (lowercase letters and digits, at most 20 characters) and checkov cannot resolve it.
  #checkov:skip=CKV_AZURE_33:Storage Analytics queue logging needs shared-key access, which is disabled; no application queues live on this account.
  #checkov:skip=CKV2_AZURE_33:No private endpoints: the template has no VNet (see CKV_AZURE_35).
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys plus infrastructure (double) encryption; customer-managed keys would need a Key Vault this template does not create.
  #checkov:skip=CKV_AZURE_35:No VNet integration in this template: the Flex app reaches storage over the public endpoint. Access is Entra-only (shared key off, no public blobs).
  #checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35; every request needs an Entra token and a data-plane role.
  #checkov:skip=CKV_AZURE_206:Replication is the storage_replication variable (default ZRS), which checkov cannot resolve.
  name                              = local.lake_account_name
  resource_group_name               = data.azurerm_resource_group.this.name
  location                          = local.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication
  is_hns_enabled                    = true
  min_tls_version                   = "TLS1_2"
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  cross_tenant_replication_enabled  = false
  default_to_oauth_authentication   = true
  https_traffic_only_enabled        = true
  public_network_access_enabled     = true
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  tags                              = var.tags

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "lake" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging is not enabled: the app reads the lake and its packages constantly, and the volume would dwarf the data; control-plane activity is in the Activity Log.
  name                  = var.lake_container_name
  storage_account_id    = azurerm_storage_account.lake.id
  container_access_type = "private"
}

resource "azurerm_storage_account" "host" {
  #checkov:skip=CKV_AZURE_43:The name is prefix+kind+suffix (lowercase letters and digits, at most 20 characters) and checkov cannot resolve it.
  #checkov:skip=CKV_AZURE_33:Storage Analytics queue logging needs shared-key access, which is disabled; no application queues live on this account.
  #checkov:skip=CKV2_AZURE_33:No private endpoints: the template has no VNet (see CKV_AZURE_35).
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys plus infrastructure (double) encryption; customer-managed keys would need a Key Vault this template does not create.
  #checkov:skip=CKV_AZURE_35:No VNet integration in this template: the Functions host reaches its storage over the public endpoint. Access is Entra-only.
  #checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35.
  #checkov:skip=CKV_AZURE_206:Replication is the storage_replication variable (default ZRS), which checkov cannot resolve.
  name                              = local.host_account_name
  resource_group_name               = data.azurerm_resource_group.this.name
  location                          = local.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication
  min_tls_version                   = "TLS1_2"
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  cross_tenant_replication_enabled  = false
  default_to_oauth_authentication   = true
  https_traffic_only_enabled        = true
  public_network_access_enabled     = true
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  tags                              = var.tags

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging is not enabled: the app reads the lake and its packages constantly, and the volume would dwarf the data; control-plane activity is in the Activity Log.
  name                  = var.deployment_container_name
  storage_account_id    = azurerm_storage_account.host.id
  container_access_type = "private"
}
