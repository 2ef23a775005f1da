include $(sort $(wildcard $(BR2_EXTERNAL_GATEWARDEN_PATH)/package/*/*.mk))
