// xdr-ingest on Azure: a Flex Consumption Function App (custom handler) that lands Microsoft
// Defender XDR Streaming API data (Event Hub and storage export) in a Delta Lake on ADLS Gen2.
//
// Deploy (resource group scope):
//   az deployment group create -g <rg> -f infra/bicep/main.bicep \
//     -p defenderStorageAccountName=<export account> alertEmail=<you@example.com>
//
// The Terraform configuration in infra/terraform describes the same resources with the same
// parameters (snake_case there); scripts/validate_iac.py checks that the two stay in step.
// No account keys or connection strings with secrets are used anywhere: every data-plane access
// is by managed identity and role assignment.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Azure region of the new resources (Function App, lake, host storage, monitoring, a new Event Hubs namespace). Default: the resource group\'s region. The Event Grid system topic always goes to the export account\'s region.')
param location string = resourceGroup().location

@description('2-8 lowercase letters and digits, starting with a letter, that start every resource name.')
@minLength(2)
@maxLength(8)
param namePrefix string = 'xdr'

@description('Lowercase letters and digits (up to 8) that make global names unique. Empty: derived from the resource group id (Bicep: uniqueString, Terraform: sha1), so the two tools name things differently unless you set it.')
@maxLength(8)
param nameSuffix string = ''

@description('Tags applied to every resource this deployment creates.')
param tags object = {}

@description('Replication of the two storage accounts created here (lake and Functions host storage). ZRS keeps the lake available through a zone outage; use LRS where ZRS is not offered.')
@allowed([
  'LRS'
  'ZRS'
  'GRS'
  'GZRS'
  'RAGRS'
  'RAGZRS'
])
param storageReplication string = 'ZRS'

@description('Container of the lake storage account (ADLS Gen2) that holds the Delta tables.')
param lakeContainerName string = 'lake'

@description('Folder inside the lake container under which the Delta tables are created (XDR_LAKE = abfss://<container>@<account>.dfs.<the cloud\'s storage suffix>/<path>).')
param lakePath string = 'defender'

@description('Blob container in the host storage account that Flex Consumption deploys the app package (the zip of scripts/package.sh) from.')
param deploymentContainerName string = 'app-package'

@description('Flex Consumption instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption maximum number of instances the app scales out to (40-1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Retention in days of the Log Analytics workspace behind Application Insights.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Name of the EXISTING storage account that Defender\'s Streaming API exports to (one container per table). It is not modified, except for: two queues, an Event Grid system topic (or a subscription on its existing one), a diagnostic setting on its queue service, and role assignments.')
param defenderStorageAccountName string

@description('Resource group of the Defender export storage account. Empty: the deployment\'s resource group.')
param defenderStorageResourceGroupName string = ''

@description('Defender export containers the app reads (XDR_DEFENDER_CONTAINERS). Default: all 26 advanced-hunting tables (registry/tables.json, field "container").')
param defenderContainers array = [
  'insights-logs-advancedhunting-alertevidence'
  'insights-logs-advancedhunting-alertinfo'
  'insights-logs-advancedhunting-behaviorentities'
  'insights-logs-advancedhunting-behaviorinfo'
  'insights-logs-advancedhunting-cloudappevents'
  'insights-logs-advancedhunting-deviceevents'
  'insights-logs-advancedhunting-devicefilecertificateinfo'
  'insights-logs-advancedhunting-devicefileevents'
  'insights-logs-advancedhunting-deviceimageloadevents'
  'insights-logs-advancedhunting-deviceinfo'
  'insights-logs-advancedhunting-devicelogonevents'
  'insights-logs-advancedhunting-devicenetworkevents'
  'insights-logs-advancedhunting-devicenetworkinfo'
  'insights-logs-advancedhunting-deviceprocessevents'
  'insights-logs-advancedhunting-deviceregistryevents'
  'insights-logs-advancedhunting-emailattachmentinfo'
  'insights-logs-advancedhunting-emailevents'
  'insights-logs-advancedhunting-emailpostdeliveryevents'
  'insights-logs-advancedhunting-emailurlinfo'
  'insights-logs-advancedhunting-identitylogonevents'
  'insights-logs-advancedhunting-identityqueryevents'
  'insights-logs-advancedhunting-identitydirectoryevents'
  'insights-logs-advancedhunting-urlclickevents'
  'insights-logs-advancedhunting-identityinfo'
  'insights-logs-advancedhunting-messageevents'
  'insights-logs-advancedhunting-messageurlinfo'
]

@description('Storage queue (on the export account) that Event Grid BlobCreated events and the sweep/replay work items go to (XDR_WORK_QUEUE). Its poison queue <name>-poison is created too.')
@minLength(3)
@maxLength(56)
param workQueueName string = 'xdr-blob-work'

@description('Replay allowlist entries <account>/<container> (<account>/* for all). Empty: the export account and each of defenderContainers.')
param replayAllowlist array = []

@description('Name of the Event Grid system topic created on the export account (when existingEventGridSystemTopicName is empty). Empty: <prefix>-defender-export-<suffix>. An account can have only one system topic: if it already has one, set existingEventGridSystemTopicName instead.')
param eventGridSystemTopicName string = ''

@description('Name of the export account\'s EXISTING Event Grid system topic (in defenderStorageResourceGroupName) to reuse; an account can have only one. Empty: create one (eventGridSystemTopicName). When set, only the event subscription and the topic identity\'s Storage Queue Data Message Sender role on the work queue are added. The topic must have a system-assigned identity (az eventgrid system-topic update --identity systemassigned): events are delivered with it, so without one the delivery cannot work and the deployment fails.')
param existingEventGridSystemTopicName string = ''

@description('true: create a Standard Event Hubs namespace and hub. false: use the existing eventHubNamespaceName / eventHubName in eventHubResourceGroupName (only the consumer group, a diagnostic setting and the role assignment are added there).')
param createEventHub bool = true

@description('Event Hubs namespace name. Required when createEventHub is false; when creating, empty means <prefix>-eh-<suffix>.')
param eventHubNamespaceName string = ''

@description('Resource group of the Event Hubs namespace. Empty: the deployment\'s resource group.')
param eventHubResourceGroupName string = ''

@description('Event hub that Defender streams to (DEFENDER_EVENTHUB_NAME). Give the same name in the Defender portal, otherwise Defender creates one hub per table.')
param eventHubName string = 'defender-xdr'

@description('Partition count of a new event hub (createEventHub true); fixed after creation on Standard.')
@minValue(1)
@maxValue(32)
param eventHubPartitionCount int = 4

@description('Message retention in days of a new event hub (Standard: 1-7). It is also how long the app can be down without losing events.')
@minValue(1)
@maxValue(7)
param eventHubRetentionDays int = 7

@description('Throughput units of a new Standard namespace (each: 1 MB/s or 1000 events/s in, 2 MB/s out).')
@minValue(1)
@maxValue(40)
param eventHubCapacity int = 1

@description('Local (SAS key) authentication on a NEW Event Hubs namespace (createEventHub true; an existing namespace is not changed). false: Entra ID only. The app uses its managed identity, and Defender\'s Streaming API connects with the Event Hub resource id and the signed-in user\'s Entra identity, so no SAS key is needed.')
param eventHubLocalAuthEnabled bool = false

@description('Dedicated consumer group of this app on the event hub (DEFENDER_CONSUMER_GROUP). Created on new and existing hubs.')
param consumerGroupName string = 'xdr-ingest'

@description('Email address the alerts are sent to (action group).')
param alertEmail string

@description('Consumer lag alert: fires when, over one hour, the namespace received this many more messages than were read from it (IncomingMessages minus OutgoingMessages).')
@minValue(1)
param eventHubLagThreshold int = 10000

// ---------------------------------------------------------------------------------------------
// Names and derived values
// ---------------------------------------------------------------------------------------------

var suffix = empty(nameSuffix) ? take(uniqueString(resourceGroup().id), 8) : nameSuffix
var lakeAccountName = '${namePrefix}lake${suffix}'
var hostAccountName = '${namePrefix}host${suffix}'
var planName = '${namePrefix}-plan-${suffix}'
var functionAppName = '${namePrefix}-ingest-${suffix}'
var workspaceName = '${namePrefix}-logs-${suffix}'
var appInsightsName = '${namePrefix}-ai-${suffix}'
var actionGroupName = '${namePrefix}-alerts-${suffix}'
var namespaceName = empty(eventHubNamespaceName) ? '${namePrefix}-eh-${suffix}' : eventHubNamespaceName
var eventHubRg = empty(eventHubResourceGroupName) ? resourceGroup().name : eventHubResourceGroupName
var exportRg = empty(defenderStorageResourceGroupName) ? resourceGroup().name : defenderStorageResourceGroupName
var systemTopicName = empty(eventGridSystemTopicName) ? '${namePrefix}-defender-export-${suffix}' : eventGridSystemTopicName
var diagnosticSettingName = '${namePrefix}-xdr-ingest-${suffix}'
var poisonQueueName = '${workQueueName}-poison'
// The cloud's storage endpoint suffix (core.windows.net, core.chinacloudapi.cn, ...).
var storageSuffix = environment().suffixes.storage
var lakeUrl = 'abfss://${lakeContainerName}@${lakeAccountName}.dfs.${storageSuffix}/${lakePath}'
var defaultReplayAllowlist = [for c in defenderContainers: '${defenderStorageAccountName}/${c}']
var effectiveReplayAllowlist = empty(replayAllowlist) ? defaultReplayAllowlist : replayAllowlist

// Built-in role definitions (ids are the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// Identity-based AzureWebJobsStorage needs blob (owner: leases, deployment package), queue and
// table access on the host account.
var hostStorageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

// ---------------------------------------------------------------------------------------------
// Storage: the lake (ADLS Gen2) and the Functions host storage
// ---------------------------------------------------------------------------------------------

resource lakeStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: lakeAccountName
  location: location
  tags: tags
  //checkov:skip=CKV_AZURE_35:No VNet integration in this template: the Flex app reaches storage over the public endpoint. Access is Entra-only (shared key off, no public blobs).
  //checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35; every request needs an Entra token and a data-plane role.
  kind: 'StorageV2'
  //checkov:skip=CKV_AZURE_206:Replication is the storageReplication parameter (default ZRS), which checkov cannot resolve.
  //checkov:skip=CKV_AZURE_43:The name is prefix+kind+suffix (lowercase letters and digits, at most 20 characters) and checkov cannot resolve it.
  sku: {
    name: 'Standard_${storageReplication}'
  }
  properties: {
    isHnsEnabled: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    defaultToOAuthAuthentication: true
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource lakeBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: lakeStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource lakeContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: lakeBlobService
  name: lakeContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostAccountName
  location: location
  tags: tags
  //checkov:skip=CKV_AZURE_35:No VNet integration in this template: the Flex app reaches storage over the public endpoint. Access is Entra-only (shared key off, no public blobs).
  //checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35; every request needs an Entra token and a data-plane role.
  kind: 'StorageV2'
  //checkov:skip=CKV_AZURE_206:Replication is the storageReplication parameter (default ZRS), which checkov cannot resolve.
  //checkov:skip=CKV_AZURE_43:The name is prefix+kind+suffix (lowercase letters and digits, at most 20 characters) and checkov cannot resolve it.
  sku: {
    name: 'Standard_${storageReplication}'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    defaultToOAuthAuthentication: true
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------------------------------------
// Monitoring: Log Analytics + Application Insights (Entra-only ingestion)
// ---------------------------------------------------------------------------------------------

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

// ---------------------------------------------------------------------------------------------
// Function App on Flex Consumption (Linux, runtime "custom")
// ---------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  //checkov:skip=CKV_AZURE_225:Flex Consumption plan; zone redundancy is region-dependent and not enabled by this template.
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  //checkov:skip=CKV_AZURE_78:Flex Consumption deploys only the package of its deployment blob container (functionAppConfig.deployment, One Deploy); siteConfig.ftpsState is not part of its schema (no Flex sample nor azurerm's Flex resource sets it).
  identity: {
    type: 'SystemAssigned'
  }
  //checkov:skip=CKV_AZURE_222:The Replay HTTP function must be reachable; it requires a function key (authLevel function) and only enqueues allowlisted blobs.
  //checkov:skip=CKV_AZURE_17:Callers authenticate with function keys (Replay, authLevel function); client certificates are not used.
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero and out per trigger; there is no fixed instance count.
  //checkov:skip=CKV_AZURE_213:No HTTP health check: the app is event driven (Event Hub, queue, timers); the host restarts the handler itself.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      // Names are fixed by the handler and its function.json files. No FUNCTIONS_WORKER_RUNTIME:
      // Flex Consumption takes the runtime from functionAppConfig.runtime instead.
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: hostStorage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD'
        }
        {
          name: 'XDR_LAKE'
          value: lakeUrl
        }
        {
          name: 'XDR_DEFENDER_STORAGE_ACCOUNT'
          value: defenderStorageAccountName
        }
        {
          name: 'XDR_DEFENDER_CONTAINERS'
          value: join(defenderContainers, ',')
        }
        {
          name: 'XDR_WORK_QUEUE'
          value: workQueueName
        }
        {
          name: 'XdrQueue__queueServiceUri'
          value: 'https://${defenderStorageAccountName}.queue.${storageSuffix}'
        }
        {
          name: 'XdrQueue__credential'
          value: 'managedidentity'
        }
        {
          name: 'XDR_STORAGE_ENDPOINT_SUFFIX'
          value: storageSuffix
        }
        {
          name: 'XDR_REPLAY_ALLOWLIST'
          value: join(effectiveReplayAllowlist, ',')
        }
        {
          name: 'DefenderEventHub__fullyQualifiedNamespace'
          value: '${namespaceName}.servicebus.windows.net'
        }
        {
          name: 'DefenderEventHub__credential'
          value: 'managedidentity'
        }
        {
          name: 'DEFENDER_EVENTHUB_NAME'
          value: eventHubName
        }
        {
          name: 'DEFENDER_CONSUMER_GROUP'
          value: consumerGroupName
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

// ---------------------------------------------------------------------------------------------
// Role assignments in this resource group (least privilege)
// ---------------------------------------------------------------------------------------------

resource hostStorageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in hostStorageRoles: {
  scope: hostStorage
  name: guid(hostStorage.id, functionApp.id, roleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// Lake: Blob Data Contributor on the lake CONTAINER only (not the account).
resource lakeContainerRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: lakeContainer
  name: guid(lakeContainer.id, functionApp.id, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights with local auth disabled accepts telemetry only from identities with this role.
resource appInsightsRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, functionApp.id, monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------
// Event Hubs (new or existing namespace) and the blob path on the export account
// ---------------------------------------------------------------------------------------------

module eventHub 'modules/eventhub.bicep' = {
  name: '${namePrefix}-eventhub-${suffix}'
  scope: resourceGroup(eventHubRg)
  params: {
    location: location
    tags: tags
    createEventHub: createEventHub
    namespaceName: namespaceName
    eventHubName: eventHubName
    partitionCount: eventHubPartitionCount
    retentionDays: eventHubRetentionDays
    capacity: eventHubCapacity
    localAuthEnabled: eventHubLocalAuthEnabled
    consumerGroupName: consumerGroupName
    principalId: functionApp.identity.principalId
    workspaceId: workspace.id
    diagnosticSettingName: diagnosticSettingName
  }
}

module defenderExport 'modules/defender-export.bicep' = {
  name: '${namePrefix}-defender-export-${suffix}'
  scope: resourceGroup(exportRg)
  params: {
    tags: tags
    storageAccountName: defenderStorageAccountName
    workQueueName: workQueueName
    poisonQueueName: poisonQueueName
    systemTopicName: systemTopicName
    existingSystemTopicName: existingEventGridSystemTopicName
    principalId: functionApp.identity.principalId
    workspaceId: workspace.id
    diagnosticSettingName: diagnosticSettingName
  }
}

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'xdr-ingest'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Any failed invocation. Event Hub batches retry forever (function.json), so failures that
// persist also mean a partition is stuck.
resource invocationFailuresAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-invocation-failures-${suffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'xdr-ingest: function invocations failed (Application Insights requests/failed > 0 in 15 minutes).'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'failed-invocations'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// Dead letters: the handler logs one JSON line per invocation with "records", "typed_rows" and
// "dead_letters" (stdout, captured by the host as an Information trace); this matches lines whose
// "dead_letters" is above zero.
var deadLetterQuery = '''
traces
| where message has "dead_letters"
| extend dead_letters = toint(extract('"dead_letters": *([0-9]+)', 1, message))
| where dead_letters > 0
| project timestamp, dead_letters, message
'''

resource deadLettersAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-dead-letters-${suffix}'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}-dead-letters-${suffix}'
    description: 'xdr-ingest: records went to the _dead_letters table (an invocation summary with dead_letters > 0).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: deadLetterQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Closed blobs behind their watermark: BlobSweep logs one JSON line per sweep with "enqueued",
// "closed_behind", "catch_up_hours_left" and "hours_listed" (stdout, captured by the host as an
// Information trace); this matches lines whose "closed_behind" is above zero.
var closedBehindQuery = '''
traces
| where message has "closed_behind"
| extend closed_behind = toint(extract('"closed_behind": *([0-9]+)', 1, message))
| where closed_behind > 0
| project timestamp, closed_behind, message
'''

resource closedBehindAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-closed-behind-${suffix}'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}-closed-behind-${suffix}'
    description: 'xdr-ingest: closed Defender export blobs are not fully read (BlobSweep closed_behind > 0): an outage is being caught up, or BlobIngest keeps failing (see the poison queue).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: closedBehindQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Consumer lag: Event Hubs has no per-consumer-group lag metric; the namespace's
// IncomingMessages minus OutgoingMessages (exported to the workspace by the diagnostic setting
// in modules/eventhub.bicep) is the backlog growth. Other readers of the namespace add to
// OutgoingMessages, so this can miss lag but does not invent it.
var lagQuery = format('''
AzureMetrics
| where ResourceProvider == "MICROSOFT.EVENTHUB" and Resource =~ "{0}"
| where MetricName in ("IncomingMessages", "OutgoingMessages")
| summarize incoming = sumif(Total, MetricName == "IncomingMessages"), outgoing = sumif(Total, MetricName == "OutgoingMessages") by bin(TimeGenerated, 5m)
| extend backlog_growth = incoming - outgoing
''', namespaceName)

resource consumerLagAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-eventhub-lag-${suffix}'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}-eventhub-lag-${suffix}'
    description: 'xdr-ingest: Event Hubs backlog grew (incoming minus outgoing messages over one hour above eventHubLagThreshold).'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: lagQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'backlog_growth'
          operator: 'GreaterThan'
          threshold: eventHubLagThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Poison queue: the queue trigger moves a work item to <queue>-poison after maxDequeueCount
// failures (host.json). StorageQueueLogs (diagnostic setting in modules/defender-export.bicep)
// shows every PutMessage on it.
var poisonQuery = format('''
StorageQueueLogs
| where AccountName =~ "{0}" and OperationName == "PutMessage"
| where Uri contains "/{1}/messages"
| project TimeGenerated, Uri
''', defenderStorageAccountName, poisonQueueName)

resource poisonQueueAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-poison-queue-${suffix}'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}-poison-queue-${suffix}'
    description: 'xdr-ingest: blob work items landed in the poison queue (blob ingestion failed maxDequeueCount times).'
    severity: 1
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

@description('Function App name (for az functionapp deployment source config-zip).')
output functionAppName string = functionApp.name

@description('Object id of the Function App\'s system-assigned identity.')
output functionAppPrincipalId string = functionApp.identity.principalId

@description('The lake URL the app writes to (XDR_LAKE).')
output lakeUrl string = lakeUrl

@description('Event Hubs namespace resource id: what the Defender portal asks for as "Event Hub Resource ID".')
output eventHubNamespaceResourceId string = eventHub.outputs.namespaceId

@description('Event hub name to enter in the Defender portal.')
output eventHubName string = eventHubName

@description('Export storage account resource id: what the Defender portal asks for as "Storage Account Resource ID".')
output defenderStorageAccountResourceId string = defenderExport.outputs.storageAccountId

@description('Application Insights resource name (traces, failures, the alerts).')
output applicationInsightsName string = appInsights.name
