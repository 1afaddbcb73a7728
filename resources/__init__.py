"""Resources: one per external system (Kafka, lake, warehouse, model store) plus settings."""

from resources.kafka import BrokerUnavailable, KafkaResource, TopicIdentity
from resources.lake import LakeResource, write_parquet_atomic
from resources.model_store import LoadedModel, ModelStoreError, ModelStoreResource
from resources.serving import ServingResource, ServingUnavailable
from resources.settings import Settings, SettingsError, Topics, load_settings
from resources.warehouse import WarehouseResource

__all__ = [
    "BrokerUnavailable",
    "KafkaResource",
    "LakeResource",
    "LoadedModel",
    "ModelStoreError",
    "ModelStoreResource",
    "ServingResource",
    "ServingUnavailable",
    "Settings",
    "SettingsError",
    "TopicIdentity",
    "Topics",
    "WarehouseResource",
    "load_settings",
    "write_parquet_atomic",
]
