// Event Hubs side of xdr-ingest, deployed into the namespace's resource group: either a new
// Standard namespace + hub, or an existing one; in both cases the app's dedicated consumer
// group, the Data Receiver role on the hub, and the namespace metrics sent to Log Analytics
// (for the consumer lag alert).

targetScope = 'resourceGroup'

@description('Region of a new namespace.')
param location string

@description('Tags of the resources created.')
param tags object

@description('true: create the namespace and the hub; false: they exist already.')
param createEventHub bool

@description('Event Hubs namespace name.')
param namespaceName string

@description('Event hub name.')
param eventHubName string

@description('Partition count of a new hub.')
param partitionCount int

@description('Message retention (days) of a new hub.')
param retentionDays int

@description('Throughput units of a new namespace.')
param capacity int

@description('Local (SAS key) authentication on a new namespace; false: Entra ID only.')
param localAuthEnabled bool

@description('The app\'s dedicated consumer group.')
param consumerGroupName string

@description('Object id of the Function App\'s managed identity.')
param principalId string

@description('Log Analytics workspace resource id for the namespace metrics.')
param workspaceId string

@description('Name of the diagnostic setting added to the namespace.')
param diagnosticSettingName string

// Azure Event Hubs Data Receiver
var eventHubsDataReceiver = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'

resource newNamespace 'Microsoft.EventHub/namespaces@2024-01-01' = if (createEventHub) {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  // Local (SAS) auth off by default: the app uses its managed identity, and Defender's Streaming
  // API connects with the Event Hub resource id and the user's Entra identity.
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: !localAuthEnabled
    isAutoInflateEnabled: false
  }
}

resource newHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = if (createEventHub) {
  parent: newNamespace
  name: eventHubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: retentionDays
  }
}

// The namespace and hub as they are after this deployment, whether created above or existing.
resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: namespaceName
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' existing = {
  parent: namespace
  name: eventHubName
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: hub
  name: consumerGroupName
  properties: {
    userMetadata: 'xdr-ingest Function App (EventHubIngest)'
  }
  dependsOn: [
    newHub
  ]
}

// Receiver on the hub only, not the namespace.
resource receiverRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hub
  name: guid(hub.id, principalId, eventHubsDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiver)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    newHub
  ]
}

resource namespaceMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: namespace
  name: diagnosticSettingName
  properties: {
    workspaceId: workspaceId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
  dependsOn: [
    newNamespace
  ]
}

@description('Namespace resource id (the Defender portal\'s "Event Hub Resource ID").')
output namespaceId string = namespace.id

@description('Event hub resource id.')
output eventHubId string = hub.id
