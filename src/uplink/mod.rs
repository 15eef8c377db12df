//! The MQTT uplink (rumqttc). Filled in by the uplink work.
