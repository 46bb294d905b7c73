from tests.support.embedded_broker import embedded_broker
from tests.support.mosquitto import mosquitto_dev, mosquitto_prod

__all__ = ["embedded_broker", "mosquitto_dev", "mosquitto_prod"]
