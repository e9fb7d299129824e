from lifecycle.connectors.redis.sink import RedisSink, account_keys_pattern

__all__ = ["RedisSink", "account_keys_pattern"]
