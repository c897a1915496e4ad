// Blob path of xdr-ingest, deployed into the resource group of the EXISTING storage account
// that Defender's Streaming API exports to: the work queue and its poison queue, an Event Grid
// system topic (created, or the account's existing one) whose BlobCreated events for the
// Defender containers' .json blobs go to the work queue (delivered with the topic's own
// identity), queue write logs for the poison alert, and the app's roles on the account (read
// blobs) and on the two queues.

targetScope = 'resourceGroup'

@description('Tags of the resources created.')
param tags object

@description('Name of the existing export storage account.')
param storageAccountName string

@description('Work queue name (XDR_WORK_QUEUE).')
param workQueueName string

@description('Poison queue name (<work queue>-poison, where the queue trigger moves failed messages).')
param poisonQueueName string

@description('Name of the Event Grid system topic to create on the account (when existingSystemTopicName is empty).')
param systemTopicName string

@description('Name of the account\'s existing system topic to reuse (it must have a system-assigned identity); empty: create systemTopicName.')
param existingSystemTopicName string

@description('Object id of the Function App\'s managed identity.')
param principalId string

@description('Log Analytics workspace resource id for the queue write logs.')
param workspaceId string

@description('Name of the diagnostic setting added to the account\'s queue service.')
param diagnosticSettingName string

// Built-in role definitions
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

var queueNames = [
  workQueueName
  poisonQueueName
]

resource exportAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: exportAccount
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queueNames: {
  parent: queueService
  name: q
  properties: {
    metadata: {
      purpose: 'xdr-ingest'
    }
  }
}]

// An account can have only one system topic: reuse the one named, or create one.
var createSystemTopic = empty(existingSystemTopicName)

resource newSystemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (createSystemTopic) {
  name: systemTopicName
  location: exportAccount.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: exportAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// The topic as it is after this deployment, whether created above or reused.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: createSystemTopic ? systemTopicName : existingSystemTopicName
}

// The topic's identity may only add messages to the work queue. An existing topic without a
// system-assigned identity has no identity.principalId: the deployment fails here.
resource topicSenderRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queues[0]
  name: guid(queues[0].id, systemTopic.id, storageQueueDataMessageSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    newSystemTopic
  ]
}

resource blobCreatedSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'xdr-ingest-blob-created'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: exportAccount.id
          queueName: workQueueName
          queueMessageTimeToLiveInSeconds: -1
        }
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/insights-logs-advancedhunting-'
      subjectEndsWith: '.json'
      isSubjectCaseSensitive: false
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
  dependsOn: [
    newSystemTopic
    topicSenderRoleAssignment
  ]
}

// The app reads (and lists) the Defender blobs...
resource appBlobReaderRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exportAccount
  name: guid(exportAccount.id, principalId, storageBlobDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// ...and reads/writes messages of the work queue and its poison queue (queue scope only).
resource appQueueRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in queueNames: {
  scope: queues[i]
  name: guid(queues[i].id, principalId, storageQueueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// Queue write operations (PutMessage on the poison queue) into the workspace.
resource queueWriteLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: queueService
  name: diagnosticSettingName
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
    ]
  }
}

@description('Export storage account resource id (the Defender portal\'s "Storage Account Resource ID").')
output storageAccountId string = exportAccount.id
