mod scim_client;
mod scim_server;
