environment             = "dev"
region                  = "us-east-1"
cidr                    = "10.41.0.0/16"
azs                     = ["us-east-1a", "us-east-1b", "us-east-1c"]
database_instance_class = "db.t4g.large"
database_storage_gb     = 100
database_max_storage_gb = 400
redis_node_type         = "cache.t4g.small"
