from tests.support.mosquitto import mosquitto_dev, mosquitto_prod

__all__ = ["mosquitto_dev", "mosquitto_prod"]
