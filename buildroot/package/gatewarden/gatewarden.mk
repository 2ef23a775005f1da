################################################################################
#
# gatewarden
#
################################################################################

# The source is this repository itself (the external tree lives in its
# buildroot/ directory), so an image always carries the checked-out code.
GATEWARDEN_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p;T;q' $(BR2_EXTERNAL_GATEWARDEN_PATH)/../Cargo.toml)
GATEWARDEN_SITE = $(BR2_EXTERNAL_GATEWARDEN_PATH)/..
GATEWARDEN_SITE_METHOD = local
GATEWARDEN_LICENSE = Apache-2.0
GATEWARDEN_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude target --exclude fuzz/target

# Buildroot vendors a Cargo package's crates in its download step, which a
# local site skips; vendor them here instead (this is the one step that needs
# crates.io, or a CARGO_HOME that already has them). The cargo-package
# infrastructure then builds with --offline --locked.
define GATEWARDEN_VENDOR_CRATES
	mkdir -p $(@D)/.cargo
	cd $(@D) && $(PKG_CARGO_ENV) cargo vendor --locked --versioned-dirs VENDOR \
		> $(@D)/.cargo/config.toml
endef
GATEWARDEN_PRE_CONFIGURE_HOOKS += GATEWARDEN_VENDOR_CRATES

# Build with the appliance's size settings (fat LTO, one codegen unit, opt-level
# "s", "z" for the crates off the packet path), the ones tools/cross-build.sh
# uses and docs/PERFORMANCE.md measures, not the plain release profile. Both
# pass the Cargo config file tools/size-profile.toml; the cargo-package
# infrastructure builds, then installs (which builds again unless the profile
# is the same), so both steps get it.
GATEWARDEN_SIZE_PROFILE = --config $(@D)/tools/size-profile.toml
GATEWARDEN_CARGO_BUILD_OPTS = $(GATEWARDEN_SIZE_PROFILE) --bin gatewarden
GATEWARDEN_CARGO_INSTALL_OPTS = $(GATEWARDEN_SIZE_PROFILE) --bin gatewarden

$(eval $(cargo-package))
