environment             = "prod"
region                  = "us-east-1"
cidr                    = "10.40.0.0/16"
azs                     = ["us-east-1a", "us-east-1b", "us-east-1c"]
database_instance_class = "db.r7g.xlarge"
database_storage_gb     = 300
database_max_storage_gb = 1000
redis_node_type         = "cache.r7g.large"
